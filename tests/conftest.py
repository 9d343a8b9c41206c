"""Fixtures shared by every test tier: the demo model, its test texts, shared data."""

from __future__ import annotations

import csv
import os
import sys
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


# Ray's driver keeps native threads (its core worker, gRPC) that can call back into
# Python while the interpreter is being torn down, after `ray.shutdown()`: one CI run
# passed every test and then died with SIGSEGV (exit 139) at exit. A test process
# that imported Ray therefore ends without interpreter teardown, with pytest's own
# exit status, once pytest has printed and closed everything.
_session: pytest.Session | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _session
    _session = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _session is None or "ray" not in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(_session.exitstatus))
