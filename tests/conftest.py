"""Fixtures shared by every test tier: the demo model, its test texts, shared data."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

# Nothing in a test run may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The read-only public data beside the repository, or a skip when it is absent."""
    path = (REPO_ROOT.parent / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip(f"shared data directory {path} is absent")
    return path


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The fine-tuned demo intent classifier, trained once into models/demo-intents."""
    from replicas.finetune import DEMO_MODEL_DIR, ensure_demo_model

    return ensure_demo_model(DEMO_MODEL_DIR)


@pytest.fixture(scope="session")
def demo_test_texts() -> list[tuple[str, str]]:
    """(text, label) rows of the demo set's held-out split, in file order."""
    path = REPO_ROOT / "data" / "demo_intents" / "test.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]
