"""Measures a replica's sequences/s over batch sizes and token lengths on this device.

The result is the `CapacityProfile` that the demand model, the autoscaler, the price
model and the simulator read. Each point times the whole `classify` path a replica
runs (tokenise, pad, forward, softmax) on texts built to an exact token length, after
warm-up, and keeps the median batch time. Also the `bertgw calibrate` subcommand.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import GatewayError
from replicas.runtime import BACKENDS, PRECISIONS, ClassifierRuntime, load_runtime
from router.capacity import CapacityPoint, CapacityProfile

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (1, 8, 32, 64)
DEFAULT_SEQ_LENS_TOKENS = (16, 32, 64, 128)
QUICK_BATCH_SIZES = (1, 4)
QUICK_SEQ_LENS_TOKENS = (16, 32)

# Common English words, each one WordPiece token in BERT's uncased vocabulary; a
# different tokenizer may split some, which `text_of_length` corrects for.
_FILLER_WORDS = (
    "please help me check my card payment because the bank transfer did not "
    "arrive today and the app still shows a pending fee on account"
).split()
_MAX_REPEATS = 1000


def text_of_length(runtime: ClassifierRuntime, seq_len_tokens: int, seed: int) -> str:
    """A text whose token count, special tokens included, is `seq_len_tokens`.

    Falls back to the closest shorter text when no word count hits it exactly.
    """
    target = min(seq_len_tokens, runtime.max_length_tokens)

    def words(n: int) -> str:
        return " ".join(
            _FILLER_WORDS[(seed + i) % len(_FILLER_WORDS)] for i in range(n)
        )

    # Start from the word count that fits if every word is one token.
    num_words = max(target - 2, 0)
    while num_words > 0 and runtime.count_tokens([words(num_words)])[0] > target:
        num_words -= 1
    # Every word is at least one token, so more than target - 2 words cannot fit.
    while (
        num_words + 1 <= target - 2
        and runtime.count_tokens([words(num_words + 1)])[0] <= target
    ):
        num_words += 1
    return words(num_words)


def measure_point(
    runtime: ClassifierRuntime,
    batch_size: int,
    seq_len_tokens: int,
    *,
    min_time_s: float = 1.0,
    min_repeats: int = 3,
    warmup_repeats: int = 2,
) -> CapacityPoint:
    """Times full batches of one shape; the median batch time gives seq/s."""
    texts = [
        text_of_length(runtime, seq_len_tokens, seed) for seed in range(batch_size)
    ]
    for _ in range(warmup_repeats):
        runtime.classify(texts, max_batch_size=batch_size)

    latencies_s: list[float] = []
    spent_s = 0.0
    while (spent_s < min_time_s or len(latencies_s) < min_repeats) and len(
        latencies_s
    ) < _MAX_REPEATS:
        started_s = time.perf_counter()
        runtime.classify(texts, max_batch_size=batch_size)
        latencies_s.append(time.perf_counter() - started_s)
        spent_s += latencies_s[-1]

    batch_latency_s = statistics.median(latencies_s)
    return CapacityPoint(
        batch_size=batch_size,
        seq_len_tokens=seq_len_tokens,
        seq_per_s=batch_size / batch_latency_s,
        batch_latency_s=batch_latency_s,
    )


def calibrate(
    runtime: ClassifierRuntime,
    *,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    seq_lens_tokens: Sequence[int] = DEFAULT_SEQ_LENS_TOKENS,
    accelerator: str | None = None,
    min_time_s: float = 1.0,
    min_repeats: int = 3,
    warmup_repeats: int = 2,
) -> CapacityProfile:
    """Measures every (batch size, length) pair and returns the profile."""
    usable_lens = sorted({min(n, runtime.max_length_tokens) for n in seq_lens_tokens})
    points = []
    for batch_size in sorted(set(batch_sizes)):
        for seq_len in usable_lens:
            point = measure_point(
                runtime,
                batch_size,
                seq_len,
                min_time_s=min_time_s,
                min_repeats=min_repeats,
                warmup_repeats=warmup_repeats,
            )
            logger.info(
                "event=calibration_point batch_size=%d seq_len_tokens=%d "
                "seq_per_s=%.1f batch_latency_s=%.4f",
                batch_size,
                seq_len,
                point.seq_per_s,
                point.batch_latency_s,
            )
            points.append(point)
    return CapacityProfile(
        model_name=runtime.model_name,
        accelerator=accelerator or detect_accelerator(runtime.device),
        points=tuple(points),
        num_threads=runtime.num_threads,
        backend=runtime.backend,
        dtype=runtime.dtype,
    )


def detect_accelerator(device: str) -> str:
    """The GPU's name on CUDA, else `cpu`."""
    if device.startswith("cuda"):
        import torch

        return str(torch.cuda.get_device_name(device))
    return "cpu"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="fine-tuned model directory")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="profile JSON to write (default: CHECKPOINT/capacity.json)",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: all cores)"
    )
    parser.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=None,
        help=f"comma-separated (default: {_csv(DEFAULT_BATCH_SIZES)})",
    )
    parser.add_argument(
        "--seq-lens",
        type=_int_list,
        default=None,
        help="token lengths, comma-separated "
        f"(default: {_csv(DEFAULT_SEQ_LENS_TOKENS)})",
    )
    parser.add_argument(
        "--accelerator",
        default=None,
        help="name recorded in the profile (default: the GPU's name, or cpu)",
    )
    parser.add_argument(
        "--min-time-s", type=float, default=1.0, help="timing per point, seconds"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a few points, briefly timed (batch sizes {_csv(QUICK_BATCH_SIZES)}, "
        f"lengths {_csv(QUICK_SEQ_LENS_TOKENS)}): for tests and smoke checks",
    )


def run(args: argparse.Namespace) -> int:
    quick = args.quick
    batch_sizes = args.batch_sizes or (
        QUICK_BATCH_SIZES if quick else DEFAULT_BATCH_SIZES
    )
    seq_lens = args.seq_lens or (
        QUICK_SEQ_LENS_TOKENS if quick else DEFAULT_SEQ_LENS_TOKENS
    )
    output = args.output or args.checkpoint / "capacity.json"
    try:
        runtime = load_runtime(
            args.checkpoint,
            backend=args.backend,
            precision=args.precision,
            device=args.device,
            num_threads=args.threads,
        )
        profile = calibrate(
            runtime,
            batch_sizes=batch_sizes,
            seq_lens_tokens=seq_lens,
            accelerator=args.accelerator,
            min_time_s=0.05 if quick else args.min_time_s,
            min_repeats=2 if quick else 3,
            warmup_repeats=1 if quick else 2,
        )
    except GatewayError as exc:
        print(f"bertgw calibrate: error: {exc.message}", file=sys.stderr)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    profile.save(output)
    print(format_profile(profile))
    print(f"wrote {output}")
    return 0


def format_profile(profile: CapacityProfile) -> str:
    """The profile as a markdown table of seq/s: batch sizes down, lengths across."""
    header = (
        "| batch \\ tokens | " + " | ".join(str(n) for n in profile.seq_lens) + " |"
    )
    rule = "|---" * (len(profile.seq_lens) + 1) + "|"
    measured = {(p.batch_size, p.seq_len_tokens): p.seq_per_s for p in profile.points}
    rows = [
        f"| {b} | "
        + " | ".join(f"{measured[(b, n)]:.1f}" for n in profile.seq_lens)
        + " |"
        for b in profile.batch_sizes
    ]
    title = (
        f"{profile.model_name} on {profile.accelerator} ({profile.backend} "
        f"{profile.dtype}, {profile.num_threads} threads), sequences/s"
    )
    return "\n".join([title, "", header, rule, *rows])


def _int_list(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected integers like 1,8,32: {value!r}"
        ) from exc
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers: {value!r}")
    return numbers


def _csv(values: Sequence[int]) -> str:
    return ",".join(str(v) for v in values)
