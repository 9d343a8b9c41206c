"""Side-by-side benchmark of this gateway against peer servers, one server at a time.

    python benchmarks/peers/run.py [--only NAME ...] [--quick]

Each peer is installed in its own virtual environment (`.venv-peers-<name>/`, made
once), started on the project's fine-tuned checkpoint inside a network namespace that
has only loopback, timed to its first answer, checked against an in-process fp32
reference, driven by the project's closed-loop load harness, and stopped before the
next one starts. Results go to benchmarks/results/peers.json and peers.md; a run with
`--only` keeps the other systems' rows from the previous file.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from report import render_table, summarize_system
from systems import REPO_ROOT, SYSTEMS, THREADS
from venvs import ensure_venv

from loadtest.machine import describe as describe_machine
from loadtest.plan import load_texts

logger = logging.getLogger(__name__)

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
TEST_CSV = DATA_DIR / "intent" / "banking77_test.csv"
CHECKPOINTS = ("models/banking77", "models/demo-intents")
ORDER = (
    "ray_serve",
    "kserve",
    "infinity",
    "vllm",
    "vllm_bf16",
    "bert_gateway",
    "bert_gateway_bf16",
)
_SESSION_TIMEOUT_S = 1800


def pick_checkpoint() -> Path:
    for relative in CHECKPOINTS:
        path = REPO_ROOT / relative
        if (path / "config.json").is_file():
            return path
    raise SystemExit(
        f"no fine-tuned checkpoint: looked for {', '.join(CHECKPOINTS)}; "
        "run `bertgw finetune` (or scripts/demo) first"
    )


def reference_labels(checkpoint: Path, texts: list[str]) -> list[str]:
    """Top labels from a plain transformers forward pass in fp32, in this process."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(THREADS)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        checkpoint, dtype=torch.float32, local_files_only=True
    ).eval()
    labels: list[str] = []
    for start in range(0, len(texts), 16):
        encoded = tokenizer(
            texts[start : start + 16],
            padding=True,
            truncation=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            best = model(**encoded).logits.argmax(-1).tolist()
        labels.extend(model.config.id2label[i] for i in best)
    return labels


def _shown(path: Path) -> str:
    """A repo-relative path, or just the folder name for one outside the repo."""
    return (
        str(path.relative_to(REPO_ROOT))
        if path.is_relative_to(REPO_ROOT)
        else path.name
    )


def _scrub(text: str, work_dir: str) -> str:
    """Keeps this machine's paths out of the results (server logs quote them)."""
    text = text.replace(work_dir, "<scratch>")
    text = text.replace(str(REPO_ROOT.parent / "shared"), "<repo>/../shared")
    return text.replace(str(REPO_ROOT), "<repo>")


def _num_labels(checkpoint: Path) -> int:
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    return len(config["id2label"])


def run_system(name: str, spec_path: Path, work_dir: Path) -> dict[str, Any]:
    """Runs one session under `unshare -n` and returns its result row."""
    scratch = work_dir / name
    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / "result.json"
    session = [
        sys.executable,
        str(Path(__file__).with_name("session.py")),
        "--system",
        name,
        "--spec",
        str(spec_path),
        "--scratch",
        str(scratch),
        "--out",
        str(out),
    ]
    # A fresh network namespace: loopback only, so nothing the server opens
    # (KServe and Ray bind every interface) is reachable from outside.
    command = ["unshare", "--net", "--", *session]
    started_s = time.monotonic()
    try:
        subprocess.run(command, check=False, timeout=_SESSION_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"status": "error", "error": f"session ran over {_SESSION_TIMEOUT_S} s"}
    if not out.is_file():
        return {"status": "error", "error": "session wrote no result"}
    row = json.loads(out.read_text(encoding="utf-8"))
    row["session_wall_s"] = round(time.monotonic() - started_s, 1)
    return row


def write_results(
    args: argparse.Namespace,
    checkpoint: Path,
    num_texts: int,
    num_label_texts: int,
    systems: dict[str, Any],
    work: str,
) -> str:
    """Writes peers.json and peers.md (after every system, so a cut run keeps what
    it measured) and returns the table."""
    result = {
        "benchmark": "peers",
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "checkpoint": _shown(checkpoint),
        "num_labels": _num_labels(checkpoint),
        "load": {
            "client": "loadtest.runner closed loop (aiohttp / grpc.aio), one process",
            "texts": "BANKING77 test set (shared data intent/banking77_test.csv), "
            f"{num_texts} texts drawn with replacement",
            "label_check": f"{num_label_texts} test texts vs a transformers fp32 "
            "forward pass of the same checkpoint",
            "mode": "quick" if args.quick else "full",
        },
        "systems": {n: systems[n] for n in ORDER if n in systems},
    }
    text = _scrub(json.dumps(result, indent=1), work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    table = render_table(json.loads(text))
    args.out.with_suffix(".md").write_text(table, encoding="utf-8")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=ORDER, help="run only this system (repeat)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="short levels, c=1 and 16 only"
    )
    parser.add_argument(
        "--skip-setup", action="store_true", help="use the venvs as they are"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR / "peers.json", help="results JSON"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help=f"serve this checkpoint instead of the first of {', '.join(CHECKPOINTS)}",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if not TEST_CSV.is_file():
        raise SystemExit(f"BANKING77 test texts not found at {TEST_CSV}")
    checkpoint = args.checkpoint.resolve() if args.checkpoint else pick_checkpoint()
    texts = load_texts(TEST_CSV)
    # Every 30th test text: 103 texts spread over all 77 intents (the CSV is
    # grouped by label).
    label_texts = texts[::30][:100]
    print(f"checkpoint {_shown(checkpoint)}; reference labels ...")
    reference = reference_labels(checkpoint, label_texts)

    previous: dict[str, Any] = {}
    if args.only and args.out.is_file():
        previous = json.loads(args.out.read_text(encoding="utf-8")).get("systems", {})
    names = [n for n in ORDER if not args.only or n in args.only]
    systems: dict[str, Any] = dict(previous)
    for name in names:
        systems.setdefault(name, {"status": "pending", "error": "not run yet"})
    table = ""
    work = tempfile.mkdtemp(prefix="peers-")
    try:
        work_dir = Path(work)
        spec_path = work_dir / "spec.json"
        spec = {
            "checkpoint_dir": str(checkpoint),
            "model_name": checkpoint.name,
            "quick": args.quick,
            "load_texts": texts,
            "label_texts": label_texts,
            "label_reference": reference,
        }
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        for name in names:
            system = SYSTEMS[name]
            print(f"== {name}", flush=True)
            setup = None if args.skip_setup else ensure_venv(system)
            if setup is not None:
                systems[name] = {"status": "error", "error": setup}
                print(f"  setup failed: {setup}")
            else:
                row = run_system(name, spec_path, work_dir)
                systems[name] = summarize_system(row)
                if row["status"] != "ok":
                    print(f"  failed: {row.get('error')}")
            table = write_results(
                args, checkpoint, len(texts), len(label_texts), systems, work
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table)

    return 0


if __name__ == "__main__":
    sys.exit(main())
