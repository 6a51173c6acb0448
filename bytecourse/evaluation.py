"""Tables with spread over evaluation seeds, and the notebooks' "live slice vs stored table" check.

Every notebook recomputes one evaluation seed of some rows of its chapter's stored tables and calls
:func:`check_slice`, which raises :class:`SliceMismatch` when a live value falls outside the stated tolerance — so a
notebook run (and nbmake in CI) fails when the code, the weights or the stored tables disagree.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
import torch.nn.functional as F


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
    kind = table.get("seed_kind", "evaluation")  # a table over training seeds says so (chapter 03's arms)
    lines.append(f"\n*mean [min–max] over {seeds} {kind} seed(s)*")
    return "\n".join(lines)


def compare_slice(live: dict, stored: dict, seed_index: int, tolerance: float) -> list[str]:
    """Compare a live one-seed recomputation of some rows with the stored full table.

    ``live`` and ``stored`` are tables; rows are matched by ``setting``. Returns human-readable mismatch
    lines (empty when every live value is within ``tolerance`` of the stored value for that seed). The tolerance is
    absolute for values up to 1 (rates, cosines: most metrics) and relative beyond: AdjointDPM's relative gradient
    error of 113 moved by 7e-3 between 1 and 2 CPU threads (float reduction order), 6e-5 of its value."""
    problems = []
    stored_rows = {r["setting"]: r for r in stored["rows"]}
    for r in live["rows"]:
        s = stored_rows.get(r["setting"])
        if s is None:
            problems.append(f"{r['setting']}: not in the stored table")
            continue
        for m, stat in r["metrics"].items():
            if m not in s["metrics"]:
                problems.append(f"{r['setting']} / {m}: not in the stored row")
                continue
            want = s["metrics"][m]["per_seed"][seed_index]
            got = stat["per_seed"][0]
            if abs(got - want) > tolerance * max(1.0, abs(want)):
                problems.append(f"{r['setting']} / {m}: live {got:.3f} vs stored {want:.3f} (tolerance {tolerance})")
    return problems


class SliceMismatch(AssertionError):
    """A live slice disagrees with the stored tables beyond its tolerance."""


def check_slice(
    live: dict[str, dict],
    stored: dict | None,
    tolerance: float | dict[str, float],
    *,
    target: str,
    seed_index: int = 0,
) -> str:
    """Check a live one-seed recomputation against the stored tables; return the line to print.

    ``live`` maps a table name to a live table (rows matched to the stored table's by ``setting``); ``tolerance``
    is one number or one per table. ``stored`` is what :func:`bytecourse.registry.stored_tables` returned: None
    means a checkpoint the tables depend on is missing, so the notebook ran on a short live training run and there is
    nothing to compare (said in the returned line). Raises :class:`SliceMismatch` naming the table, row, metric, live
    and stored value when any value is off by more than the tolerance, or a live row is not in the stored table."""
    if stored is None:
        return (
            f"no shipped checkpoint for {target}: this notebook trained a short run instead, so there is no stored "
            "table to compare the live slice with"
        )
    problems = []
    for name, table in live.items():
        tol = tolerance[name] if isinstance(tolerance, dict) else tolerance
        if name not in stored:
            problems.append(f"{name}: no such stored table")
            continue
        problems += [f"{name} / {p}" for p in compare_slice(table, stored[name], seed_index, tol)]
    if problems:
        raise SliceMismatch(
            f"the live slice of {target} disagrees with its stored tables "
            f"(`python -m bytecourse eval {target}` recomputes them):\n" + "\n".join(problems)
        )
    tols = tolerance if isinstance(tolerance, dict) else {name: tolerance for name in live}
    return (
        "live slice matches the stored tables (" + ", ".join(f"{k} ±{v:g}" for k, v in tols.items() if k in live) + ")"
    )


def seed_range_side(a: dict, b: dict, higher_is_better: bool = True) -> str:
    """Where ``a``'s seed range lies against ``b``'s (both :func:`summarise` entries): ``"better"`` when every seed
    of ``a`` is on the good side of every seed of ``b``, ``"worse"`` when every one is on the bad side, else
    ``"overlap"``. The building block of the chapters' three-outcome verdicts (reproduced / not / inconclusive)."""
    hi, lo = (a, b) if higher_is_better else (b, a)
    if hi["min"] > lo["max"]:
        return "better"
    if hi["max"] < lo["min"]:
        return "worse"
    return "overlap"


def outcome_of(sides: Sequence[str], seeds: int, min_seeds: int = 3) -> str:
    """``"reproduced"`` when every comparison is ``"better"``, ``"not reproduced"`` when any is ``"worse"``,
    ``"inconclusive"`` otherwise — and always ``"inconclusive"`` with fewer than ``min_seeds`` seeds."""
    if seeds < min_seeds:
        return "inconclusive"
    if sides and all(s == "better" for s in sides):
        return "reproduced"
    return "not reproduced" if "worse" in sides else "inconclusive"


def split_by_recipe(runs: dict[str, dict], recipe: dict[str, object]) -> tuple[dict[str, dict], list[str]]:
    """The recorded runs whose ``config`` matches ``recipe`` (today's values of the fields that set a run's budget,
    e.g. ``{"steps": 3000}``), and the sorted names of those recorded under an earlier recipe. A chapter's sweep
    compares settings at one budget, so its tables never mix two: while a new budget is retrained run by run (over
    several sessions), the older runs wait outside the tables, listed as stale. A config that lacks a field was
    recorded before the field existed, under an earlier recipe, so it is stale too."""
    current = {
        name: run
        for name, run in runs.items()
        if all(key in run.get("config", {}) and run["config"][key] == value for key, value in recipe.items())
    }
    return current, sorted(name for name in runs if name not in current)


# ---- image metrics shared by the chapters (frames in [0, 1]) ----


def _gaussian(size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM (Wang et al. 2004) per image of ``(N, C, H, W)`` in [0, 1]: a 7×7 Gaussian window (σ = 1.5), per
    channel, C₁ = 0.01², C₂ = 0.03², valid positions only, averaged."""
    c = a.shape[1]
    w = _gaussian().to(a).expand(c, 1, -1, -1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of ``(N, C, H, W)`` in [0, 1] (peak 1): 10·log10(1 / MSE), MSE floored at 10⁻¹⁰."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp(min=1e-10)
    return 10 * torch.log10(1 / mse)
