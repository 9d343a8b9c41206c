"""BANKING77 with `bertgw finetune` at its defaults: test accuracy and training time.

Runs the real command on the public train split, then reloads the written checkpoint
as a replica would (fp32, AutoModelForSequenceClassification) and scores the official
test split. Keeps the checkpoint in models/banking77 for the other benchmarks.

    python benchmarks/finetune_banking77.py
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from loadtest.machine import describe as describe_machine  # noqa: E402
from replicas.finetune_data import accuracy, macro_f1  # noqa: E402

DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "intent"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
GOAL_TEST_ACCURACY = 0.92
GOAL_TRAIN_S = 1200.0


def score_checkpoint(model_dir: Path, test_csv: Path) -> dict[str, float]:
    """Test accuracy and macro-F1 of the saved checkpoint, in fp32 as served."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with test_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    label2id = model.config.label2id
    expected = [label2id[r["label"]] for r in rows]
    predicted: list[int] = []
    with torch.inference_mode():
        for start in range(0, len(rows), 64):
            texts = [r["text"] for r in rows[start : start + 64]]
            batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            predicted += model(**batch).logits.argmax(dim=-1).tolist()
    return {
        "test_accuracy": accuracy(predicted, expected),
        "macro_f1": macro_f1(predicted, expected),
        "test_rows": len(rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "models/banking77")
    args = parser.parse_args()
    train_csv = DATA_DIR / "banking77_train.csv"
    test_csv = DATA_DIR / "banking77_test.csv"
    if not train_csv.is_file() or not test_csv.is_file():
        print(
            f"BANKING77 not found under {DATA_DIR}; nothing measured", file=sys.stderr
        )
        return 1

    def rel(path: Path) -> str:
        return os.path.relpath(path, REPO_ROOT)

    argv = [
        "finetune",
        rel(train_csv),
        "-o",
        rel(args.out_dir),
        "--test-csv",
        rel(test_csv),
        "--no-progress",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", *argv], cwd=REPO_ROOT, env=env, check=True
    )
    command_wall_s = time.perf_counter() - started

    card = json.loads((args.out_dir / "model_card.json").read_text())
    served = score_checkpoint(args.out_dir, test_csv)
    result = {
        "benchmark": "finetune_banking77",
        "command": "bertgw " + shlex.join(argv),
        "test_accuracy": round(served["test_accuracy"], 4),
        "macro_f1": round(served["macro_f1"], 4),
        "test_rows": served["test_rows"],
        "train_seconds": card["train_s"],
        "finetune_total_seconds": card["total_s"],
        "command_wall_seconds": round(command_wall_s, 1),
        "epochs_run": card["epochs_run"],
        "best_epoch": card["best_epoch"],
        "steps": card["steps"],
        "val_accuracy": round(card["metrics"]["val_accuracy"], 4),
        "bf16_test_accuracy": round(card["metrics"]["test_accuracy"], 4),
        "history": card["history"],
        "hyperparameters": card["hyperparameters"],
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "cpu": describe_machine()["cpu_model"],
            "torch_threads": card["threads"],
        },
        "versions": card["versions"],
        "goal": {"test_accuracy": GOAL_TEST_ACCURACY, "train_seconds": GOAL_TRAIN_S},
        "goal_met": served["test_accuracy"] >= GOAL_TEST_ACCURACY
        and card["train_s"] <= GOAL_TRAIN_S,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }

    table = "\n".join(
        [
            "| BANKING77, `bertgw finetune` defaults | measured | goal |",
            "|---|---|---|",
            f"| test accuracy (fp32 reload, {served['test_rows']} rows) "
            f"| {result['test_accuracy']:.4f} | >= {GOAL_TEST_ACCURACY} |",
            f"| test macro-F1 | {result['macro_f1']:.4f} | |",
            f"| test accuracy, bf16 as trained "
            f"| {result['bf16_test_accuracy']:.4f} | |",
            f"| training seconds | {result['train_seconds']:.0f} "
            f"| <= {GOAL_TRAIN_S:.0f} |",
            f"| whole command, seconds | {result['command_wall_seconds']:.0f} | |",
            f"| epochs run (best) | {result['epochs_run']} ({result['best_epoch']}) "
            "| |",
            f"| cores | {result['machine']['cores']} | |",
        ]
    )
    footer = f"\nCommand: `{result['command']}` ({result['measured_at']})\n"
    print(table + footer)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / "finetune_banking77.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (RESULTS_DIR / "finetune_banking77.md").write_text(
        table + "\n" + footer, encoding="utf-8"
    )
    return 0 if result["goal_met"] else 3


if __name__ == "__main__":
    sys.exit(main())
