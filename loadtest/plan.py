"""What a run sends: the texts, how many per request, and when.

The whole plan is drawn up front from one seed, so a run is reproducible whatever
the number of worker processes that later share it.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextMix:
    """How many texts go in one request, and with what probability."""

    sizes: tuple[int, ...]
    weights: tuple[float, ...]

    @property
    def mean_texts(self) -> float:
        return float(np.dot(self.sizes, self.weights))


def parse_mix(spec: str) -> TextMix:
    """Parses `1:0.8,4:0.15,16:0.05` (texts:weight pairs; weights are normalised)."""
    sizes: list[int] = []
    weights: list[float] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        size_text, _, weight_text = part.partition(":")
        try:
            size = int(size_text)
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            raise ValueError(f"text mix entry {part!r} is not texts:weight") from None
        if size < 1 or weight < 0:
            raise ValueError(
                f"text mix entry {part!r}: need texts >= 1 and weight >= 0"
            )
        sizes.append(size)
        weights.append(weight)
    total = sum(weights)
    if not sizes or total <= 0:
        raise ValueError(f"text mix {spec!r} has no entry with a positive weight")
    return TextMix(sizes=tuple(sizes), weights=tuple(w / total for w in weights))


def load_texts(path: str | Path, column: str = "text") -> list[str]:
    """The non-empty values of one column of a CSV file."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise ValueError(
                f"{path.name} has no column {column!r}; columns: {reader.fieldnames}"
            )
        texts = [row[column] for row in reader if row[column] and row[column].strip()]
    if not texts:
        raise ValueError(f"{path.name} column {column!r} holds no text")
    return texts


@dataclass(frozen=True)
class RequestPlan:
    """Request i sends texts `text_ids[text_starts[i]:text_starts[i + 1]]`.

    `offsets_s` holds the scheduled send times (open loop) or is None (closed loop).
    `ids` are the request numbers in the whole run, kept when the plan is sharded.
    """

    ids: np.ndarray
    num_texts: np.ndarray
    text_ids: np.ndarray
    text_starts: np.ndarray
    offsets_s: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ids)

    def texts_of(self, index: int, pool: list[str]) -> list[str]:
        lo, hi = self.text_starts[index], self.text_starts[index + 1]
        return [pool[t] for t in self.text_ids[lo:hi]]

    def shard(self, shard_index: int, num_shards: int) -> RequestPlan:
        """Every `num_shards`-th request from `shard_index`: equal rates per shard."""
        picked = np.arange(shard_index, len(self.ids), num_shards)
        num_texts = self.num_texts[picked]
        text_ids = np.concatenate(
            [
                self.text_ids[self.text_starts[i] : self.text_starts[i + 1]]
                for i in picked
            ]
            or [np.zeros(0, dtype=np.int64)]
        )
        return RequestPlan(
            ids=self.ids[picked],
            num_texts=num_texts,
            text_ids=text_ids,
            text_starts=np.concatenate([[0], np.cumsum(num_texts)]),
            offsets_s=None if self.offsets_s is None else self.offsets_s[picked],
        )


def build_plan(
    *,
    num_requests: int,
    pool_size: int,
    mix: TextMix,
    rng: np.random.Generator,
    offsets_s: np.ndarray | None = None,
) -> RequestPlan:
    """Draws texts per request (sizes from `mix`, texts uniformly with replacement)."""
    if offsets_s is not None:
        num_requests = len(offsets_s)
    num_texts = rng.choice(np.array(mix.sizes), size=num_requests, p=mix.weights)
    text_starts = np.concatenate([[0], np.cumsum(num_texts)]).astype(np.int64)
    text_ids = rng.integers(0, pool_size, size=int(text_starts[-1]))
    return RequestPlan(
        ids=np.arange(num_requests),
        num_texts=num_texts.astype(np.int64),
        text_ids=text_ids,
        text_starts=text_starts,
        offsets_s=offsets_s,
    )
