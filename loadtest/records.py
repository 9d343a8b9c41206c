"""One record per planned request, and the JSONL file that holds them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

# Kinds that are not an answer from the server.
LOST = "lost"  # sent, no answer before the run ended
NOT_SENT = "not_sent"  # its scheduled time fell after the run's time cap
OK = "ok"


@dataclass(frozen=True)
class Record:
    """What happened to request `id`; times in seconds from the run's start.

    `scheduled_s` is None in closed-loop runs; `send_s` is None when not sent;
    `latency_s` is None when no answer came.
    """

    id: int
    scheduled_s: float | None
    send_s: float | None
    latency_s: float | None
    kind: str
    status: str | None
    protocol: str
    cloud: str | None
    num_texts: int
    shard: int


def write_records(records: list[Record], path: str | Path) -> None:
    with Path(path).open("w") as handle:
        for record in records:
            handle.write(json.dumps(asdict(record), separators=(",", ":")))
            handle.write("\n")


def read_records(path: str | Path) -> list[Record]:
    with Path(path).open() as handle:
        return [Record(**json.loads(line)) for line in handle if line.strip()]
