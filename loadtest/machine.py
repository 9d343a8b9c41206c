"""What a benchmark ran on, recorded beside its figures.

The same script gives different figures on different CPUs: a CPU with AMX runs the
bf16 forward about twice as fast as one with only avx512_bf16, while the per-request
cost of the server around it barely moves. So every result file names the CPU model
and the matrix extensions it has, not only the core count.
"""

from __future__ import annotations

import os
import platform
from typing import Any

# The instruction-set flags that decide how fast the forward runs here.
_MATRIX_FLAGS = ("avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def describe() -> dict[str, Any]:
    """CPU model, usable cores, matrix extensions, memory, Python and OS."""
    flags = set((_cpuinfo_field("flags") or "").split())
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    mem_gib = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            mem_gib = round(int(meminfo.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu_model": _cpuinfo_field("model name") or platform.processor() or "unknown",
        "cpus": cpus,
        "matrix_flags": [f for f in _MATRIX_FLAGS if f in flags],
        "mem_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
