"""Tables with spread over evaluation seeds, and the notebook's "live slice vs stored table" check."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def summarise(per_seed: Sequence[dict[str, float]]) -> dict[str, dict]:
    """``{metric: {"mean", "std", "min", "max", "per_seed"}}`` from one dict of metrics per seed."""
    if not per_seed:
        raise ValueError("summarise needs at least one seed's metrics")
    out = {}
    for key in per_seed[0]:
        vals = [float(m[key]) for m in per_seed]
        out[key] = {
            "mean": statistics.fmean(vals),
            "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals),
            "max": max(vals),
            "per_seed": vals,
        }
    return out


def format_table(table: dict, metrics: Sequence[str] | None = None, digits: int = 3) -> str:
    """A Markdown table: one row per setting, ``mean [min–max]`` per metric over the seeds."""
    rows = table["rows"]
    metrics = list(metrics or rows[0]["metrics"].keys())
    head = "| " + " | ".join([table.get("setting_name", "setting"), *metrics]) + " |"
    sep = "|" + "---|" * (len(metrics) + 1)
    lines = [head, sep]
    for r in rows:
        cells = []
        for m in metrics:
            s = r["metrics"][m]
            if s["min"] == s["max"]:
                cells.append(f"{s['mean']:.{digits}f}")
            else:
                cells.append(f"{s['mean']:.{digits}f} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]")
        lines.append("| " + " | ".join([str(r["setting"]), *cells]) + " |")
    seeds = len(rows[0]["metrics"][metrics[0]]["per_seed"])
    lines.append(f"\n*mean [min–max] over {seeds} evaluation seed(s)*")
    return "\n".join(lines)


def compare_slice(live: dict, stored: dict, seed_index: int, tolerance: float) -> list[str]:
    """Compare a live one-seed recomputation of some rows with the stored full table.

    ``live`` and ``stored`` are tables; rows are matched by ``setting``. Returns human-readable mismatch
    lines (empty when every live value is within ``tolerance`` of the stored value for that seed)."""
    problems = []
    stored_rows = {r["setting"]: r for r in stored["rows"]}
    for r in live["rows"]:
        s = stored_rows.get(r["setting"])
        if s is None:
            problems.append(f"{r['setting']}: not in the stored table")
            continue
        for m, stat in r["metrics"].items():
            want = s["metrics"][m]["per_seed"][seed_index]
            got = stat["per_seed"][0]
            if abs(got - want) > tolerance:
                problems.append(f"{r['setting']} / {m}: live {got:.3f} vs stored {want:.3f} (tolerance {tolerance})")
    return problems
