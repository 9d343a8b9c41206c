"""PNG plots of a run over time: latency, throughput, share per cloud, replicas."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from loadtest.records import OK, Record
from loadtest.scrape import ScrapeSample

logger = logging.getLogger(__name__)

# About this many time bins per plot, each at least 0.1 s wide.
_TARGET_BINS = 60
_MIN_BIN_S = 0.1


def _bin_width_s(span_s: float) -> float:
    return max(_MIN_BIN_S, span_s / _TARGET_BINS)


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(
    records: list[Record], scrapes: list[ScrapeSample], out_dir: str | Path
) -> list[Path]:
    """Writes the plots into `out_dir`; returns the files written."""
    out_dir = Path(out_dir)
    sent = [r for r in records if r.send_s is not None]
    if not sent:
        return []
    plt = _pyplot()
    send_s = np.array([r.send_s for r in sent])
    span_s = float(send_s.max()) + 1e-9
    width_s = _bin_width_s(span_s)
    edges = np.arange(0.0, span_s + width_s, width_s)
    centres = (edges[:-1] + edges[1:]) / 2
    ok = [r for r in sent if r.kind == OK and r.latency_s is not None]
    ok_send_s = np.array([r.send_s for r in ok])
    ok_latency_ms = np.array([r.latency_s for r in ok]) * 1e3
    written: list[Path] = []

    # Latency: every answer as a dot, p50 and p99 per bin as lines.
    fig, ax = plt.subplots(figsize=(8, 4))
    if len(ok):
        ax.scatter(
            ok_send_s, ok_latency_ms, s=2, alpha=0.2, color="grey", label="request"
        )
        which = np.digitize(ok_send_s, edges) - 1
        for q, style in ((50, "-"), (99, "--")):
            values = [
                np.percentile(ok_latency_ms[which == b], q)
                if np.any(which == b)
                else np.nan
                for b in range(len(centres))
            ]
            ax.plot(centres, values, style, label=f"p{q}")
        ax.set_yscale("log")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("latency of successful requests")
    ax.legend(loc="upper left")
    written.append(_save(fig, out_dir / "latency.png", plt))

    # Throughput: sent, ok and failed per second in each bin.
    fig, ax = plt.subplots(figsize=(8, 4))
    failed = [r.send_s for r in sent if r.kind != OK]
    series = (("sent", send_s, "-"), ("ok", ok_send_s, "--"), ("failed", failed, ":"))
    for label, times, style in series:
        counts, _ = np.histogram(np.asarray(times, dtype=float), bins=edges)
        ax.plot(centres, counts / width_s, style, label=label)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("requests/s")
    ax.set_title("throughput (by send time)")
    ax.legend(loc="upper left")
    written.append(_save(fig, out_dir / "throughput.png", plt))

    # Share per cloud: stacked fractions of successful answers.
    clouds = sorted({r.cloud or "unknown" for r in ok})
    if clouds:
        fig, ax = plt.subplots(figsize=(8, 4))
        counts = np.array(
            [
                np.histogram(
                    [float(r.send_s or 0.0) for r in ok if (r.cloud or "unknown") == c],
                    edges,
                )[0]
                for c in clouds
            ],
            dtype=float,
        )
        totals = counts.sum(axis=0)
        shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        ax.stackplot(centres, shares, labels=clouds)
        ax.set_ylim(0, 1)
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel("share of answers")
        ax.set_title("share per cloud")
        ax.legend(loc="upper left")
        written.append(_save(fig, out_dir / "cloud_share.png", plt))

    # Replicas per cloud, as scraped from the gateway.
    replica_clouds = sorted({c for s in scrapes for c in s.replicas})
    if replica_clouds:
        fig, ax = plt.subplots(figsize=(8, 4))
        times = [s.t_s for s in scrapes]
        for cloud in replica_clouds:
            ax.step(
                times,
                [s.replicas.get(cloud, 0) for s in scrapes],
                where="post",
                label=cloud,
            )
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel("replicas")
        ax.set_title("replicas per cloud (from /metrics)")
        ax.legend(loc="upper left")
        written.append(_save(fig, out_dir / "replicas.png", plt))
    return written


def _save(fig: object, path: Path, plt: object) -> Path:
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=100)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[attr-defined]
    return path
