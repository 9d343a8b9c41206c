"""The server's process tree, seen from the session that started it: finding every
process below the session, their memory (PSS), their CPU time beside the machine's,
and stopping them all.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time

_PR_SET_CHILD_SUBREAPER = 36
_STOP_GRACE_S = 20.0
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def become_subreaper() -> None:
    """Orphans of the server (daemonised helpers) re-parent here, so we can find
    and stop them and count their memory."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def descendants(root_pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may hold spaces; fields after the last ')' are fixed.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = [root_pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class PssSampler:
    """Samples the summed PSS of every process below this one (the server tree)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.peak_mib = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample_mib(self) -> float:
        return sum(_pss_kib(pid) for pid in descendants(os.getpid())) / 1024

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mib = max(self.peak_mib, self.sample_mib())
            self.samples += 1

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def stop_tree(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's group, then SIGKILL whatever is still below us."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        server.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.wait(timeout=10)
    # Reap re-parented orphans so none is left as a zombie.
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break


def _cpu_ticks(pid: int) -> int:
    """User plus system time of one process, in clock ticks (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # utime and stime are fields 14 and 15 of stat; 12 and 13 after the ')'.
    return int(fields[11]) + int(fields[12])


def _busy_ticks() -> int:
    """Busy time of all CPUs since boot (everything but idle and iowait)."""
    with open("/proc/stat", encoding="utf-8") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    return sum(values) - values[3] - values[4]


class CpuMeter:
    """CPU seconds spent by this session's tree, and by everything else, over a span.

    Other programs on the machine take cores from the server under test; a level
    with much foreign CPU time is not a clean measurement, so it is recorded.
    """

    def __enter__(self) -> CpuMeter:
        self._ours = self._our_ticks()
        self._busy = _busy_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        ours = max(0, self._our_ticks() - self._ours)
        busy = max(0, _busy_ticks() - self._busy)
        self.ours_s = ours / _CLOCK_TICKS_PER_S
        self.foreign_s = max(0, busy - ours) / _CLOCK_TICKS_PER_S

    @staticmethod
    def _our_ticks() -> int:
        me = os.getpid()
        return sum(_cpu_ticks(pid) for pid in [me, *descendants(me)])


def process_role(pid: int) -> str:
    """What a process is, for a CPU breakdown: Ray's title for its workers
    (`ray::ProxyActor`, `ray::ServeReplica:app:Ingress`), else its program or the
    script a Python interpreter runs."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
    except OSError:
        return "?"
    if not argv:
        return "?"
    if argv[0].startswith("ray::"):
        return argv[0].split()[0].split(".")[0]
    program = os.path.basename(argv[0])
    if program.startswith("python") and len(argv) > 1:
        scripts = [a for a in argv[1:] if a.endswith(".py")]
        if scripts:
            return os.path.basename(scripts[0])
    return program


class CpuByProcess:
    """CPU seconds this process and each one below it spent over a span, summed
    per `process_role`; this process itself is `self_role`."""

    def __init__(self, self_role: str = "this process") -> None:
        self._self_role = self_role

    def _snapshot(self) -> dict[int, tuple[str, int]]:
        me = os.getpid()
        found = {me: (self._self_role, _cpu_ticks(me))}
        for pid in descendants(me):
            found[pid] = (process_role(pid), _cpu_ticks(pid))
        return found

    def __enter__(self) -> CpuByProcess:
        self._start = self._snapshot()
        self._start_s = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._snapshot()
        self.wall_s = time.perf_counter() - self._start_s
        seconds: dict[str, float] = {}
        for pid, (role, ticks) in end.items():
            used = ticks - self._start.get(pid, (role, 0))[1]
            if used > 0:
                seconds[role] = seconds.get(role, 0.0) + used / _CLOCK_TICKS_PER_S
        self.seconds = dict(sorted(seconds.items(), key=lambda kv: -kv[1]))
