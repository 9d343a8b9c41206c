"""Headline figures per system, and the markdown table, from the measured levels."""

from __future__ import annotations

from typing import Any

HIGH_CONCURRENCY = 64
CORES = 2


def _levels(row: dict[str, Any], protocol_is_grpc: bool) -> list[dict[str, Any]]:
    return [
        level
        for level in row.get("levels", [])
        if (level["protocol"] == "grpc") == protocol_is_grpc
    ]


def _at(levels: list[dict[str, Any]], concurrency: int, texts: int) -> dict | None:
    for level in levels:
        if level["concurrency"] == concurrency and level["texts_per_request"] == texts:
            return level
    return None


def _best(levels: list[dict[str, Any]], texts: int) -> dict[str, Any] | None:
    candidates = [lv for lv in levels if lv["texts_per_request"] == texts]
    return max(candidates, key=lambda lv: lv["seq_per_s"]) if candidates else None


def headline(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures the table shows, from one protocol's levels."""
    out: dict[str, Any] = {}
    for texts, suffix in ((1, "1text"), (16, "16text")):
        best = _best(levels, texts)
        out[f"best_seq_per_s_{suffix}"] = best["seq_per_s"] if best else None
        out[f"best_{suffix}_p99_ms"] = best["latency_ms"]["p99"] if best else None
        out[f"best_{suffix}_concurrency"] = best["concurrency"] if best else None
    low = _at(levels, 1, 1)
    out["low_load_p50_ms"] = low["latency_ms"]["p50"] if low else None
    out["low_load_p99_ms"] = low["latency_ms"]["p99"] if low else None
    high_1 = _at(levels, HIGH_CONCURRENCY, 1)
    high_16 = _at(levels, HIGH_CONCURRENCY, 16)
    out["p99_ms_at_c64"] = high_1["latency_ms"]["p99"] if high_1 else None
    out["p99_ms_at_c64_16text"] = high_16["latency_ms"]["p99"] if high_16 else None
    highs = [lv for lv in (high_1, high_16) if lv is not None]
    out["refused_at_c64"] = sum(lv["refused"] for lv in highs) if highs else None
    failures: dict[str, int] = {}
    for level in levels:
        for kind, count in level["failures_by_kind"].items():
            failures[kind] = failures.get(kind, 0) + count
    out["failures_by_kind"] = failures
    measured_s = sum(lv["duration_s"] for lv in levels)
    foreign_s = sum(lv.get("cpu_s_foreign", 0.0) for lv in levels)
    # Share of the machine's cores that other programs took while this one was
    # measured (2 cores x measured seconds); near 0 for a clean run.
    out["foreign_cpu_share"] = (
        round(foreign_s / (measured_s * CORES), 3) if measured_s else None
    )
    return out


def summarize_system(row: dict[str, Any]) -> dict[str, Any]:
    """The session's row with the headline figures (HTTP, and gRPC if measured)."""
    if row.get("status") != "ok":
        return row
    labels = row.get("labels", {})
    summary: dict[str, Any] = {
        "status": "ok",
        "startup_s": row.get("startup_s"),
        "label_agreement": labels.get("agreement"),
        "peak_pss_mib": row.get("peak_pss_mib"),
        "idle_pss_mib": row.get("idle_pss_mib"),
        **headline(_levels(row, protocol_is_grpc=False)),
    }
    grpc_levels = _levels(row, protocol_is_grpc=True)
    if grpc_levels:
        summary["grpc"] = headline(grpc_levels)
    return summary | {k: v for k, v in row.items() if k not in summary}


def _cell(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_table(result: dict[str, Any]) -> str:
    lines = [
        f"# Peers on {result['machine']['cpus']} CPU cores "
        f"({result['machine']['cpu_model']}; "
        f"{', '.join(result['machine'].get('matrix_flags', [])) or 'no bf16/AMX'})",
        "",
        f"Checkpoint `{result['checkpoint']}`, closed loop over HTTP, "
        f"mode {result['load']['mode']}. Command: `{result['command']}`",
        "",
        "| system | start-up s | labels agree | best seq/s 1 text (p99 ms) "
        "| best seq/s 16 texts (p99 ms) | p50 ms c=1 | p99 ms c=64, 1 text "
        "| refused c=64, 1 + 16 texts "
        "| peak PSS MiB | other programs' CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["systems"].items():
        if row.get("status") != "ok":
            error = str(row.get("error", "did not run")).replace("|", "/")[:120]
            lines.append(f"| {name} | not measured: {error} | | | | | | | | |")
            continue
        lines.append(_row(name, row))
        if "grpc" in row:
            lines.append(_row(f"{name} (gRPC)", row["grpc"], shared=row))
    lines.append("")
    return "\n".join(lines)


def _row(name: str, figures: dict[str, Any], shared: dict | None = None) -> str:
    common = shared or figures
    agreement = common.get("label_agreement")
    return (
        f"| {name} | {_cell(common.get('startup_s'), 1)} "
        f"| {_percent(agreement)} "
        f"| {_cell(figures['best_seq_per_s_1text'], 1)} "
        f"({_cell(figures['best_1text_p99_ms'], 0)}) "
        f"| {_cell(figures['best_seq_per_s_16text'], 1)} "
        f"({_cell(figures['best_16text_p99_ms'], 0)}) "
        f"| {_cell(figures['low_load_p50_ms'], 1)} "
        f"| {_cell(figures['p99_ms_at_c64'], 0)} "
        f"| {_cell(figures['refused_at_c64'])} "
        f"| {_cell(common.get('peak_pss_mib'), 0)} "
        f"| {_percent(figures.get('foreign_cpu_share'))} |"
    )


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.0f}%"
