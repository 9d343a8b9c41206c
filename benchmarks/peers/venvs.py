"""Builds each peer's virtual environment once, outside the project's own.

A venv is made with the interpreter running this script, torch goes in first and
pinned to the CPU build, then the peer's packages; torchvision, torchaudio and
torchcodec are removed because PyPI's builds next to torch 2.13.0+cpu break
imports. A stamp file records what was installed, so a second run only checks that
the imports still work.
"""

from __future__ import annotations

import logging
import subprocess
import sys

from systems import REPO_ROOT, TORCH_REQUIREMENT, System

logger = logging.getLogger(__name__)

_STAMP = ".peers-stamp"
# PyPI's builds of these, pulled in beside torch 2.13.0+cpu, are made for another
# torch (torchaudio's needs CUDA's libc10_cuda) and break the imports of packages
# that import them when present (transformers' audio utilities, vLLM's server).
_NATIVE_EXTRAS = ("torchvision", "torchaudio", "torchcodec")


def _probe(system: System) -> str | None:
    """None when the venv imports what the system needs, else the error text."""
    code = "; ".join(f"import {module}" for module in system.probe_imports) or "pass"
    try:
        probe = subprocess.run(
            [str(system.python), "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{type(error).__name__}: {error}"
    if probe.returncode != 0:
        return (
            probe.stderr.strip().splitlines()[-1] if probe.stderr else "import failed"
        )
    return None


def ensure_venv(system: System) -> str | None:
    """Makes `system.venv` if needed; returns None when usable, else why not."""
    venv = REPO_ROOT / system.venv
    wanted = "\n".join([TORCH_REQUIREMENT, *system.requirements])
    stamp = venv / _STAMP
    # The project's own venv and the runtime's vLLM venv belong to others: only
    # check them.
    if not system.venv.startswith(".venv-peers-"):
        return _probe(system)
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == wanted:
        return _probe(system)

    logger.info("event=venv_setup venv=%s", system.venv)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(system.python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
        [str(system.python), "-m", "pip", "install", "-q", TORCH_REQUIREMENT],
        [str(system.python), "-m", "pip", "install", "-q", *system.requirements],
        [str(system.python), "-m", "pip", "uninstall", "-y", "-q", *_NATIVE_EXTRAS],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0 and "uninstall" not in step:
            return f"{' '.join(step[2:5])} failed: {done.stderr.strip()[-500:]}"
    error = _probe(system)
    if error is None:
        stamp.write_text(wanted, encoding="utf-8")
    return error
