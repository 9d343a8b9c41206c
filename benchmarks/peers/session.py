"""Measures one server, run inside a network namespace that has only loopback.

`run.py` starts this script under `unshare -n`; the server is its child and the load
client runs in this process, so both see the same loopback and nothing else. Steps:
start the server, time the first correct answer, check labels against the fp32
reference, warm up, drive the closed-loop grid while sampling the server's memory,
stop the server and every process it left behind. The result is one JSON file.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from proctree import CpuMeter, PssSampler, become_subreaper, stop_tree
from systems import SYSTEMS, RunContext, System, environment

from loadtest.driver import REFUSED_KINDS
from loadtest.plan import build_plan, parse_mix
from loadtest.protocols import (
    TargetConfig,
    classify_body,
    oip_body,
    template_body,
)
from loadtest.runner import RunLimits, run_load
from loadtest.summary import percentiles

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S = 600.0
_CLIENT_TIMEOUT_S = 60.0
_BAD_REQUEST_CODES = frozenset({400, 405, 415, 422})
# Answers that say "not now" rather than "broken": overload and rate limits.
# A refused closed-loop worker waits this long before sending again, as a client
# honouring the gateway's Retry-After (1 s) does. Only the gateway refuses.
_REFUSAL_BACKOFF_S = 1.0


@dataclass(frozen=True)
class Grid:
    """The closed-loop levels and how long each runs."""

    concurrency: tuple[int, ...]
    texts_per_request: tuple[int, ...]
    warmup_s: float
    measure_s: float
    max_requests: int

    @classmethod
    def for_mode(cls, quick: bool) -> Grid:
        if quick:
            return cls((1, 16), (1, 16), warmup_s=1.0, measure_s=5.0, max_requests=4000)
        # 25000 requests is above what any server here answers in 15 s (about
        # 300 requests/s at best), so the time cap, not the count, ends a level.
        return cls(
            (1, 4, 16, 64), (1, 16), warmup_s=3.0, measure_s=15.0, max_requests=25000
        )


# --- talking to the server ------------------------------------------------------


def request_for(target: TargetConfig, texts: list[str]) -> tuple[str, bytes]:
    """The URL and body the harness would send for these texts."""
    base = target.url.rstrip("/")
    if target.protocol == "http-oip":
        url = f"{base}/v2/models/{target.model}/infer"
        return url, oip_body(texts, target.input_name, False)
    if target.protocol == "http-classify":
        return f"{base}/v1/classify", classify_body(target.model, texts, False)
    assert target.template is not None
    return base + target.template_path, template_body(
        target.template, target.model, texts
    )


def classify_once(system: System, target: TargetConfig, texts: list[str]) -> list[str]:
    url, body = request_for(target, texts)
    request = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=_CLIENT_TIMEOUT_S) as response:
        labels = system.labels_from(json.loads(response.read()))
    if len(labels) != len(texts):
        raise ValueError(f"asked for {len(texts)} labels, got {len(labels)}")
    return labels


def wait_ready(
    system: System, target: TargetConfig, server: subprocess.Popen[bytes], text: str
) -> float:
    """Seconds from the server's start to its first correct answer."""
    started_s = time.monotonic()
    deadline_s = started_s + _STARTUP_TIMEOUT_S
    last_error = "no answer yet"
    while time.monotonic() < deadline_s:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with code {server.returncode}")
        try:
            classify_once(system, target, [text])
            return time.monotonic() - started_s
        except urllib.error.HTTPError as error:
            # A malformed-request answer will not change by waiting.
            if error.code in _BAD_REQUEST_CODES:
                raise RuntimeError(f"server refused the request: {error}") from error
            last_error = f"HTTP {error.code}"
        except (OSError, ValueError, KeyError, TypeError) as error:
            last_error = f"{type(error).__name__}: {error}"
        time.sleep(0.5)
    raise TimeoutError(f"no answer in {_STARTUP_TIMEOUT_S:.0f} s ({last_error})")


def label_agreement(
    system: System, target: TargetConfig, texts: list[str], expected: list[str]
) -> dict[str, Any]:
    got: list[str] = []
    for start in range(0, len(texts), 16):
        got.extend(classify_once(system, target, texts[start : start + 16]))
    matches = sum(a == b for a, b in zip(got, expected, strict=True))
    return {
        "checked": len(expected),
        "matches": matches,
        "agreement": matches / len(expected),
    }


# --- the load grid ----------------------------------------------------------------


def measure_level(
    target: TargetConfig,
    texts: list[str],
    concurrency: int,
    texts_per_request: int,
    duration_s: float,
    max_requests: int,
    seed: int,
) -> dict[str, Any]:
    """One closed-loop level: throughput, latency and failures by kind."""
    plan = build_plan(
        num_requests=max_requests,
        pool_size=len(texts),
        mix=parse_mix(str(texts_per_request)),
        rng=np.random.default_rng(seed),
    )
    with CpuMeter() as cpu:
        result = run_load(
            target,
            plan,
            texts,
            limits=RunLimits(
                max_duration_s=duration_s,
                drain_timeout_s=_CLIENT_TIMEOUT_S,
                refusal_backoff_s=_REFUSAL_BACKOFF_S,
            ),
            concurrency=concurrency,
        )
    sent = [r for r in result.records if r.send_s is not None]
    ok = [r for r in sent if r.kind == "ok" and r.latency_s is not None]
    # Throughput counts texts answered inside the window; latency counts every
    # answer to a request sent inside it (in-flight ones drain afterwards).
    done_in_window = [r for r in ok if r.send_s + r.latency_s <= duration_s]
    failures: dict[str, int] = {}
    for record in sent:
        if record.kind != "ok":
            failures[record.kind] = failures.get(record.kind, 0) + 1
    refused = sum(n for kind, n in failures.items() if kind in REFUSED_KINDS)
    latency_ms = {
        k: None if v is None else round(v * 1000, 2)
        for k, v in percentiles([r.latency_s for r in ok]).items()
    }
    return {
        "protocol": target.protocol,
        "concurrency": concurrency,
        "texts_per_request": texts_per_request,
        "duration_s": duration_s,
        "requests_sent": len(sent),
        "requests_ok": len(ok),
        "seq_per_s": round(sum(r.num_texts for r in done_in_window) / duration_s, 1),
        "latency_ms": latency_ms,
        "failures_by_kind": failures,
        "refused": refused,
        # CPU seconds of the server and client, and of every other program on the
        # machine, over the level (warm-up excluded); the latter should be ~0.
        "cpu_s_server_and_client": round(cpu.ours_s, 1),
        "cpu_s_foreign": round(cpu.foreign_s, 1),
    }


def drive_grid(
    target: TargetConfig, texts: list[str], grid: Grid, sampler: PssSampler
) -> list[dict[str, Any]]:
    levels = []
    for texts_per_request in grid.texts_per_request:
        for concurrency in grid.concurrency:
            run_args = (target, texts, concurrency, texts_per_request)
            measure_level(*run_args, grid.warmup_s, grid.max_requests, seed=1)
            level = measure_level(*run_args, grid.measure_s, grid.max_requests, seed=2)
            level["peak_pss_mib_so_far"] = round(sampler.peak_mib, 1)
            levels.append(level)
            print(
                f"  {target.protocol} c={concurrency:<3d} texts={texts_per_request:<3d}"
                f" {level['seq_per_s']:8.1f} seq/s  p50 {level['latency_ms']['p50']}"
                f" ms  p99 {level['latency_ms']['p99']} ms"
                f"  failures {level['failures_by_kind'] or '-'}",
                flush=True,
            )
    return levels


def target_config(fields: dict[str, Any], model: str, concurrency: int) -> TargetConfig:
    return TargetConfig(
        model=model,
        timeout_s=_CLIENT_TIMEOUT_S,
        # One connection (or channel) per closed-loop worker, so the client never
        # queues requests that the server could have taken.
        connections=concurrency,
        **fields,
    )


def run_session(args: argparse.Namespace) -> dict[str, Any]:
    system = SYSTEMS[args.system]
    spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    scratch = Path(args.scratch)
    ctx = RunContext(Path(spec["checkpoint_dir"]), spec["model_name"], scratch)
    grid = Grid.for_mode(spec["quick"])
    load_texts: list[str] = spec["load_texts"]
    max_c = max(grid.concurrency)
    http_fields = system.http_target(ctx)
    grpc_fields = system.grpc_target(ctx)
    probe = target_config(http_fields, ctx.model_name, 1)

    result: dict[str, Any] = {"status": "error", "settings": system.settings}
    log_path = scratch / "server.log"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    become_subreaper()
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            system.command(ctx),
            env=environment(system, ctx),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=scratch,
        )
    try:
        result["startup_s"] = round(wait_ready(system, probe, server, load_texts[0]), 2)
        result["idle_pss_mib"] = round(PssSampler().sample_mib(), 1)
        print(f"  ready in {result['startup_s']} s", flush=True)
        result["labels"] = label_agreement(
            system, probe, spec["label_texts"], spec["label_reference"]
        )
        print(f"  labels {result['labels']}", flush=True)

        # Warm-up: whatever compiles or allocates lazily does it now.
        warm = target_config(http_fields, ctx.model_name, 16)
        measure_level(warm, load_texts, 16, 16, grid.warmup_s * 2, grid.max_requests, 0)

        with PssSampler() as sampler:
            levels = []
            for fields in (http_fields, grpc_fields):
                if fields is None:
                    continue
                target = target_config(fields, ctx.model_name, max_c)
                levels.extend(drive_grid(target, load_texts, grid, sampler))
        result["levels"] = levels
        result["peak_pss_mib"] = round(sampler.peak_mib, 1)
        result["pss_samples"] = sampler.samples
        result["status"] = "ok"
    except Exception as error:
        # Session boundary: whatever failed, the server must still be stopped and
        # the failure kept in the results row.
        logger.exception("event=session_failed system=%s", system.name)
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        stop_tree(server)
    if result["status"] != "ok":
        tail = log_path.read_bytes()[-4000:].decode(errors="replace")
        result["server_log_tail"] = tail
    return result


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # Turned into an exception so that `finally` still stops the server.
    raise SystemExit(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--system", required=True, choices=sorted(SYSTEMS))
    parser.add_argument("--spec", required=True, help="JSON written by run.py")
    parser.add_argument("--scratch", required=True, help="per-session folder")
    parser.add_argument("--out", required=True, help="result JSON to write")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    result = run_session(args)
    Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
