"""Fine-tuning input: labelled CSVs, a stratified split, length-bucketed batches and
the metrics that judge a classifier.

Kept apart from the training loop so it can be tested without a model.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gateway.errors import DatasetError

# Rows of a pool are sorted by length before being cut into batches: large enough
# that neighbours have nearly equal lengths, small enough that batches still mix.
_BUCKET_POOL_BATCHES = 50


@dataclass(frozen=True)
class LabelledTexts:
    """The rows of one CSV, in file order."""

    texts: list[str]
    labels: list[str]
    sha256: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_labelled_csv(
    path: Path, text_column: str = "text", label_column: str = "label"
) -> LabelledTexts:
    """Reads a CSV of texts and labels, refusing files no classifier can learn from.

    Raises:
        DatasetError: the file is missing or empty, lacks a column, or has a row
            with an empty text or label.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {str(path)!r} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if not columns:
            raise DatasetError(f"dataset file {str(path)!r} is empty (no header row)")
        for wanted in (text_column, label_column):
            if wanted not in columns:
                raise DatasetError(
                    f"dataset file {str(path)!r} has no column {wanted!r}; "
                    f"columns found: {', '.join(repr(c) for c in columns)}"
                )
        texts: list[str] = []
        labels: list[str] = []
        for line_number, row in enumerate(reader, start=2):
            text = (row.get(text_column) or "").strip()
            label = (row.get(label_column) or "").strip()
            if not text or not label:
                raise DatasetError(
                    f"dataset file {str(path)!r} row at line {line_number} has an "
                    f"empty {text_column if not text else label_column!r}"
                )
            texts.append(text)
            labels.append(label)
    if not texts:
        raise DatasetError(f"dataset file {str(path)!r} is empty (no data rows)")
    return LabelledTexts(texts=texts, labels=labels, sha256=file_sha256(path))


def label_maps(labels: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    """Sorted label ids, so the same data always yields the same head layout.

    Raises:
        DatasetError: fewer than two distinct labels.
    """
    names = sorted(set(labels))
    if len(names) < 2:
        found = names[0] if names else "none"
        raise DatasetError(
            f"a classifier needs at least 2 classes; the label column has only "
            f"1 distinct value ({found!r})"
        )
    id2label = dict(enumerate(names))
    return id2label, {name: index for index, name in id2label.items()}


def stratified_split(
    labels: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Row indices for training and validation, each class split in the same ratio.

    A class with a single row goes to training only: it cannot be in both.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(by_label):
        indices = by_label[label]
        rng.shuffle(indices)
        n_val = max(1, round(len(indices) * val_fraction)) if len(indices) > 1 else 0
        val.extend(indices[:n_val])
        train.extend(indices[n_val:])
    return sorted(train), sorted(val)


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor


def collate(token_ids: Sequence[Sequence[int]], labels: Sequence[int]) -> Batch:
    """Pads to the longest sequence of this batch only (dynamic padding)."""
    width = max(len(ids) for ids in token_ids)
    input_ids = torch.zeros((len(token_ids), width), dtype=torch.long)
    attention_mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return Batch(input_ids, attention_mask, torch.tensor(labels, dtype=torch.long))


def bucketed_batches(
    token_ids: Sequence[Sequence[int]],
    labels: Sequence[int],
    batch_size: int,
    rng: random.Random,
) -> Iterator[Batch]:
    """One epoch of training batches whose rows have similar lengths.

    Shuffles, sorts each pool of rows by length, cuts it into batches and shuffles
    the batches: padding stays small while every epoch sees new batch mixes.
    """
    order = list(range(len(token_ids)))
    rng.shuffle(order)
    pool_rows = batch_size * _BUCKET_POOL_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), pool_rows):
        pool = sorted(order[start : start + pool_rows], key=lambda i: len(token_ids[i]))
        batches.extend(
            pool[offset : offset + batch_size]
            for offset in range(0, len(pool), batch_size)
        )
    rng.shuffle(batches)
    for rows in batches:
        yield collate([token_ids[i] for i in rows], [labels[i] for i in rows])


def batches_per_epoch(n_rows: int, batch_size: int) -> int:
    pool_rows = batch_size * _BUCKET_POOL_BATCHES
    full_pools, rest = divmod(n_rows, pool_rows)
    return full_pools * _BUCKET_POOL_BATCHES + -(-rest // batch_size)


def sorted_batches(
    token_ids: Sequence[Sequence[int]], batch_size: int
) -> Iterator[tuple[list[int], Batch]]:
    """Evaluation batches in length order, with the row indices each one holds."""
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield rows, collate([token_ids[i] for i in rows], [0] * len(rows))


def accuracy(predicted: Sequence[int], expected: Sequence[int]) -> float:
    if not expected:
        raise ValueError("accuracy of an empty set is undefined")
    hits = sum(1 for p, e in zip(predicted, expected, strict=True) if p == e)
    return hits / len(expected)


def macro_f1(predicted: Sequence[int], expected: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes present in `expected`.

    A class never predicted and never expected is left out rather than counted as
    a perfect (or a zero) score.
    """
    classes = set(expected)
    scores: list[float] = []
    for cls in sorted(classes):
        tp = sum(1 for p, e in zip(predicted, expected, strict=True) if p == e == cls)
        fp = sum(1 for p, e in zip(predicted, expected, strict=True) if p == cls != e)
        fn = sum(1 for p, e in zip(predicted, expected, strict=True) if e == cls != p)
        denominator = 2 * tp + fp + fn
        scores.append(2 * tp / denominator if denominator else 0.0)
    return sum(scores) / len(scores)
