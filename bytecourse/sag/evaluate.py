"""Chapter 01's evaluation: the tasks, the tables of ``python -m bytecourse eval sag`` and the live slice.

Tasks (both on the primer's caption-conditioned Shapes model, one-object captions, DDIM 20, CFG 2):

- **style** (SAG's own task, §4.1): guide towards the Gram statistics of one reference image (a textured world
  image; the primer model only ever saw plain backgrounds). Measured: the style (Gram) loss of the final
  sample — the paper's "style score" — and whether the oracle still finds the caption's object (our stand-in
  for the paper's CLIP score), plus realism.
- **position**: "put the object in the left third", the frozen clean-image classifier's energy. Measured: the
  oracle's hit rate (the object's centroid in the left third), content and realism.

SAG has no checkpoint of its own (it is training-free): its tables live under ``manifest["tables"]["sag"]``.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from .. import text
from ..diffusion import initial_noise, make_ddim_scheduler, make_train_scheduler, to_image_space
from ..diffusion.classifier import get_classifier
from ..diffusion.image_model import DEFAULT_GUIDANCE_SCALE, EVAL_SEED_OFFSET, eval_captions
from ..diffusion.losses import AttributeLoss, GramStyleLoss
from ..diffusion.memory import SavedTensorMeter, tensor_bytes
from ..diffusion.ode import VPLevels, autograd_grad, continuous_adjoint_grad, solve, symplectic_adjoint_grad
from ..evaluation import summarise
from ..worlds import ShapesConfig, make_shapes
from .estimate import clean_estimate_grid
from .guided import GuidanceConfig, freedom, guided_sample, sag, unguided_sample, universal_guidance

CHECKPOINT = None  # training-free: no weights of its own
TABLE_KEY = "sag"
STEPS = 20
SAMPLES = 24
STYLE_REFERENCE_SEED = 5  # a textured world image ("a cyan square"); fixed so every table uses the same reference
N_GRID = (1, 2, 4, 8)
EARLY_WINDOW = (0.1, 0.6)
# the fronts: each method swept over the guidance strength (× the paper's step-size rule); strength 0 is the shared
# unguided row and strength 1 the method table's own row, so a front costs only the strengths below
FRONT_STRENGTHS = (0.5, 2.0, 4.0, 8.0)
FRONT_METHODS = ("FreeDoM (= SAG n=1)", "SAG n=2", "SAG n=4", "SAG n=8", "Universal Guidance")
# what each task's front plots against content and realism: the guidance loss (style) / the oracle's hit rate
FRONT_Y = {"style": ("loss", True), "position": ("left_hit", False)}  # (metric, lower is better)
CONTENT_LEVEL = 0.70  # the matched-content level
LONG_OUTER_STEPS = 50  # the one front with a longer outer sampler (seed 0; FreeDoM and SAG n=4, style)
LONG_METHODS = ("FreeDoM (= SAG n=1)", "SAG n=4")


# ----------------------------------------------------------------------------------------------------- tasks


def style_reference() -> tuple[torch.Tensor, str]:
    b = make_shapes(1, STYLE_REFERENCE_SEED, ShapesConfig(textured=True), num_objects=1)
    return b.images[0], b.captions[0]


def make_loss(task: str, classifier=None):
    """The guidance loss of a task (per-sample, on x̂₀ in model space)."""
    if task == "style":
        ref, _ = style_reference()
        return GramStyleLoss(ref * 2 - 1)
    if task == "position":
        clf = classifier if classifier is not None else get_classifier()[0]
        return AttributeLoss(clf, "position", "left")
    raise ValueError(f"task must be 'style' or 'position', got {task!r}")


def oracle_measures(images: torch.Tensor, captions: list[str]) -> dict[str, float]:
    """Content (caption's object found, exact), realism and the position hit rate (centroid in the left third)."""
    from ..oracle import caption_accuracy, detect_objects, realism

    dets = detect_objects(images)
    acc = caption_accuracy(captions, dets)
    hits = [any(o.well_formed and o.centroid[0] < 1 / 3 for o in d) for d in dets]
    return {"content": acc["exact"], "realism": float(realism(images).mean()), "left_hit": sum(hits) / len(hits)}


def method_rows() -> list[tuple[str, GuidanceConfig | None]]:
    rows: list[tuple[str, GuidanceConfig | None]] = [("unguided", None), ("FreeDoM (= SAG n=1)", freedom())]
    rows += [(f"SAG n={n}", sag(n)) for n in N_GRID[1:]]
    rows += [
        ("Universal Guidance", universal_guidance()),
        ("SAG n=4, plain autograd", sag(4, gradient="autograd")),
        (f"FreeDoM, window {EARLY_WINDOW}", freedom(window=EARLY_WINDOW)),
        (f"SAG n=4, window {EARLY_WINDOW}", sag(4, window=EARLY_WINDOW)),
    ]
    return rows


def run_setting(
    model, task: str, config: GuidanceConfig | None, seed: int, n: int = SAMPLES, loss_fn=None, steps: int = STEPS
) -> dict[str, float]:
    """One table cell: ``n`` samples of seed ``seed``'s captions under one guidance setting (``steps`` outer DDIM
    steps)."""
    loss_fn = loss_fn if loss_fn is not None else make_loss(task)
    caps = eval_captions(seed, 1, n, model.config.image_size)
    tokens = text.encode(caps, model.config.caption_length)
    noise = initial_noise(
        (n, model.config.channels, model.config.image_size, model.config.image_size), EVAL_SEED_OFFSET + seed
    )
    sched = make_train_scheduler()
    if config is None:
        r = unguided_sample(
            model, noise, tokens, sched, loss_fn, steps=steps, guidance_scale=DEFAULT_GUIDANCE_SCALE, seed=seed
        )
    else:
        r = guided_sample(
            model, noise, tokens, sched, loss_fn, config, steps=steps, guidance_scale=DEFAULT_GUIDANCE_SCALE, seed=seed
        )
    out = {
        "loss": float(r.loss.mean()),
        **oracle_measures(to_image_space(r.x0), caps),
        "nfe": r.nfe,
        "vjp": r.vjp,
        "seconds_per_sample": r.seconds / n,
    }
    return out


def guidance_table(
    model, task: str, seeds: list[int], rows=None, n: int = SAMPLES, progress: bool = True, steps: int = STEPS
) -> dict:
    """One row per ``(name, config)`` of ``rows`` (:func:`method_rows` by default), each over ``seeds``."""
    from tqdm.auto import tqdm

    loss_fn = make_loss(task)
    rows = method_rows() if rows is None else rows
    out = []
    for name, guidance in tqdm(rows, disable=not progress, desc=f"guidance ({task})"):
        per_seed = [run_setting(model, task, guidance, s, n, loss_fn, steps) for s in seeds]
        out.append(
            {
                "setting": name,
                "config": None if guidance is None else guidance.to_dict(),
                "metrics": summarise(per_seed),
            }
        )
    return {
        "rows": out,
        "seeds": list(seeds),
        "samples_per_seed": n,
        "outer_steps": steps,
        "setting_name": f"method ({task})",
    }


def sweep_rows(methods=FRONT_METHODS, strengths=FRONT_STRENGTHS) -> list[tuple[str, GuidanceConfig]]:
    """``(name, config)`` for every method of :func:`method_rows` named in ``methods`` at every strength."""
    configs = dict(method_rows())
    return [(f"{m}, strength {s:g}", replace(configs[m], strength=s)) for m in methods for s in strengths]


def front_table(model, task: str, seeds: list[int], progress: bool = True, **kw) -> dict:
    """The strength sweep of :data:`FRONT_METHODS` (the strengths of :data:`FRONT_STRENGTHS`); assembled into fronts
    with the method table's unguided and strength-1 rows by :func:`fronts`."""
    table = guidance_table(model, task, seeds, rows=sweep_rows(**kw), progress=progress)
    return {**table, "setting_name": f"method, strength ({task})"}


def long_outer_front(model, seeds=(0,), progress: bool = True) -> dict:
    """FreeDoM and SAG n = 4 on the style task with a :data:`LONG_OUTER_STEPS`-step outer sampler (the guidance
    window is the same fraction of it), strengths 0, 0.5, 1 and :data:`FRONT_STRENGTHS` above 1, on ``seeds``: does
    the 20-step outer sampler decide the comparison?"""
    rows = [("unguided", None), *sweep_rows(LONG_METHODS, (0.5, 1.0, *FRONT_STRENGTHS[1:]))]
    table = guidance_table(model, "style", list(seeds), rows=rows, progress=progress, steps=LONG_OUTER_STEPS)
    return {**table, "setting_name": f"method, strength (style, DDIM {LONG_OUTER_STEPS} outer steps)"}


def fronts(method_table: dict, sweep: dict | None = None, methods=FRONT_METHODS) -> dict[str, list[dict]]:
    """Per method, its front: rows ordered by strength, each ``{"strength", "metrics"}``, from the unguided row
    (strength 0), the method table's row (strength 1) and the sweep's rows (``sweep`` may be None when
    ``method_table`` already holds every ``"<method>, strength <s>"`` row, as :func:`long_outer_front` does)."""
    by_name = {r["setting"]: r for r in method_table["rows"]}
    if sweep is not None:
        by_name |= {r["setting"]: r for r in sweep["rows"]}
    out = {}
    for m in methods:
        pts = [(0.0, by_name["unguided"])]
        if m in by_name:
            pts.append((1.0, by_name[m]))
        prefix = f"{m}, strength "
        pts += [(float(k[len(prefix) :]), r) for k, r in by_name.items() if k.startswith(prefix)]
        out[m] = [{"strength": s, "metrics": r["metrics"]} for s, r in sorted(pts, key=lambda p: p[0])]
    return out


# ------------------------------------------------------------------------------ exactness, memory, estimates


def _eps_fn(model, tokens, guidance_scale=DEFAULT_GUIDANCE_SCALE):
    from ..diffusion import guided_eps

    return lambda x, t: guided_eps(model, x, t, tokens, guidance_scale)


def exactness_and_memory(model, ns=(1, 2, 4, 8, 16), index: int = 2, batch: int = 1) -> dict:
    """For the real UNet: relative error of the symplectic adjoint against autograd through the same n-step map
    (float64 and float32), the continuous adjoint's (float64,
    :func:`~bytecourse.diffusion.ode.continuous_adjoint_grad`), and the peak bytes held for the backward pass
    (states + live saved tensors)."""
    import copy

    ts = make_ddim_scheduler(make_train_scheduler(), STEPS).timesteps.tolist()
    levels = VPLevels(make_train_scheduler().alphas_cumprod)
    caps = eval_captions(0, 1, batch, model.config.image_size)
    tokens = text.encode(caps, model.config.caption_length)
    ref, _ = style_reference()
    loss32 = GramStyleLoss(ref * 2 - 1)
    model64 = copy.deepcopy(model).double()
    loss64 = copy.deepcopy(loss32).double()
    rows = []
    for n in ns:
        grid = clean_estimate_grid(ts, index, n)
        row = {"n": n, "steps": len(grid) - 1}
        for dtype, m, lf in ((torch.float64, model64, loss64), (torch.float32, model, loss32)):
            x = initial_noise((batch, 3, model.config.image_size, model.config.image_size), 7).to(dtype)
            eps = _eps_fn(m, tokens)
            total = lambda z, lf=lf: lf(z).sum()  # noqa: E731
            ga = symplectic_adjoint_grad(eps, x, grid, levels, total, "data").grad_x
            gb = autograd_grad(eps, x, grid, levels, total, "data").grad_x
            row["rel_err_float64" if dtype == torch.float64 else "rel_err_float32"] = float(
                (ga - gb).norm() / gb.norm()
            )
            if dtype == torch.float64:  # the continuous adjoint's error: the solver's, not rounding (§1.6 item 1)
                gc = continuous_adjoint_grad(eps, x, grid, levels, total, "data").grad_x
                row["continuous_rel_err"] = float((gc - gb).norm() / gb.norm())
        x = initial_noise((batch, 3, model.config.image_size, model.config.image_size), 7)
        eps = _eps_fn(model, tokens)
        total = lambda z: loss32(z).sum()  # noqa: E731
        params = list(model.parameters())
        with SavedTensorMeter(exclude=params) as meter:
            meter.hold(tensor_bytes(x) * len(grid))  # the adjoint keeps every state of the forward solve
            symplectic_adjoint_grad(eps, x, grid, levels, total, "data")
        with SavedTensorMeter(exclude=params) as auto:
            xg = x.clone().requires_grad_(True)
            with torch.enable_grad():
                out = total(solve(eps, xg, grid, levels, "data"))
                torch.autograd.grad(out, xg)
        row |= {
            "adjoint_peak_bytes": meter.peak_bytes,
            "autograd_peak_bytes": auto.peak_bytes,
            "ratio": auto.peak_bytes / meter.peak_bytes,
        }
        rows.append(row)
    return {
        "rows": rows,
        "index": index,
        "t": ts[index],
        "batch": batch,
        "parameter_bytes": tensor_bytes(*model.parameters()),
        "note": "peak bytes held for the backward pass: stored states (counted explicitly) + saved tensors of live "
        "graphs "
        "(the network's parameters are not counted: they are in memory with or without a backward pass)",
    }


def estimate_accuracy(
    model,
    seeds: list[int],
    indices=(2, 6, 10, 14),
    ns=N_GRID,
    batch: int = 8,
    fine_stride: int = 10,
    progress: bool = True,
) -> dict:
    """‖x̂₀⁽ⁿ⁾(x_t) − x₀^fine(x_t)‖ (rms per pixel) and the cosine between the n-step and the fine-solve guidance
    gradients (style loss), for x_t = α_t x₀ + σ_t ε of world images, against the sampler index and n."""
    from tqdm.auto import tqdm

    sched = make_train_scheduler()
    levels = VPLevels(sched.alphas_cumprod)
    ts = make_ddim_scheduler(sched, STEPS).timesteps.tolist()
    loss_fn = make_loss("style")
    total = lambda z: loss_fn(z).sum()  # noqa: E731
    per: dict[tuple[int, int], list[dict]] = {}
    for seed in tqdm(seeds, disable=not progress, desc="estimate accuracy"):
        world = make_shapes(
            batch, EVAL_SEED_OFFSET + 500 + seed, ShapesConfig(size=model.config.image_size), num_objects=1
        )
        x0 = world.images * 2 - 1
        eps = _eps_fn(model, world.tokens)
        for i in indices:
            g = torch.Generator().manual_seed(
                1000 * seed + i
            )  # per level, so any subset of levels recomputes the same x_t
            t = ts[i]
            a = sched.alphas_cumprod[t]
            xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=g)
            fine = [t, *range(t - fine_stride, -1, -fine_stride), -1]
            ref = symplectic_adjoint_grad(eps, xt, fine, levels, total, "data")
            g_ref, x_ref = ref.grad_x, ref.end
            for n in ns:
                est = symplectic_adjoint_grad(eps, xt, clean_estimate_grid(ts, i, n), levels, total, "data")
                g_n, x_n = est.grad_x, est.end
                per.setdefault((i, n), []).append(
                    {
                        "rms_error": float((x_n - x_ref).flatten(1).pow(2).mean(1).sqrt().mean()),
                        "grad_cosine": float(
                            torch.nn.functional.cosine_similarity(g_n.flatten(1), g_ref.flatten(1)).mean()
                        ),
                    }
                )
    rows = [
        {"setting": f"t={ts[i]} (step {i}), n={n}", "index": i, "t": ts[i], "n": n, "metrics": summarise(per[(i, n)])}
        for i in indices
        for n in ns
    ]
    return {
        "rows": rows,
        "seeds": list(seeds),
        "samples_per_seed": batch,
        "setting_name": "level, n",
        "fine_solve": f"Euler (DDIM) every {fine_stride} training timesteps from t to 0",
    }


PARTS = {
    "methods": ("exactness_memory", "estimate", "style", "position"),
    "fronts": ("style_sweep", "position_sweep", "style_long_outer"),
}


def evaluate_sag(model, seeds: list[int], progress: bool = True, part: str | None = None) -> dict:
    """The chapter's tables, or one part of them (:data:`PARTS`; ``eval sag --part``, each part ≤ 45 min on 2 CPU
    cores); ``wall_time_s`` holds each computed part's seconds."""
    makers = {
        "exactness_memory": lambda: exactness_and_memory(model),
        "estimate": lambda: estimate_accuracy(model, seeds, progress=progress),
        "style": lambda: guidance_table(model, "style", seeds, progress=progress),
        "position": lambda: guidance_table(model, "position", seeds, progress=progress),
        "style_sweep": lambda: front_table(model, "style", seeds, progress=progress),
        "position_sweep": lambda: front_table(model, "position", seeds, progress=progress),
        "style_long_outer": lambda: long_outer_front(model, progress=progress),
    }
    tables, times = {}, {}
    for name, keys in PARTS.items():
        if part is not None and name != part:
            continue
        t0 = time.time()
        for key in keys:
            tables[key] = makers[key]()
        times[name] = round(time.time() - t0, 1)
    tables[f"wall_time_s{'' if part is None else '_' + part}"] = times if part is None else times[part]
    return tables


def cli_eval(args) -> dict:
    from ..device import default_device
    from ..diffusion.image_model import load_image_model

    model, _ = load_image_model(default_device(args.device))
    return evaluate_sag(model, list(args.seeds), part=getattr(args, "part", None))


SLICE_TOLERANCE = {"estimate": 1e-3, "style": 0.02}  # same code and seed; guidance rows: a sample may flip a verdict
SLICE_ROWS = ("FreeDoM (= SAG n=1)", "SAG n=2")


def live_slice(model, tables: tuple[str, ...] = ("estimate", "style"), rows: tuple[str, ...] = SLICE_ROWS) -> dict:
    """Evaluation seed 0 of the estimate-accuracy table (two levels) and of the style-guidance table (``rows``),
    recomputed; wall times are dropped (they differ between machines). Checked with
    :func:`bytecourse.evaluation.check_slice` at :data:`SLICE_TOLERANCE`."""
    out = {}
    if "estimate" in tables:
        out["estimate"] = estimate_accuracy(model, [0], indices=(2, 10), progress=False)
    if "style" in tables:
        out["style"] = guidance_table(
            model, "style", [0], rows=[r for r in method_rows() if r[0] in rows], progress=False
        )
        for r in out["style"]["rows"]:
            r["metrics"].pop("seconds_per_sample")
    return out


# ---- comparing methods on their fronts (issue 15): sweep the guidance strength, compare at matched content ----


def front_value(front: list[dict], level: float, x: str, y: str) -> list[float]:
    """Per evaluation seed, the front's ``y`` interpolated (piecewise linearly, in ``x``) at ``x = level``.

    ``front``: one row per guidance strength, each ``{"metrics": {metric: {"per_seed": [...]}}}`` (a table's rows).
    Raises ``ValueError`` when ``level`` lies outside the range a seed's sweep covers: the sweep must be widened, not
    the front extrapolated."""
    if len(front) < 2:
        raise ValueError(f"a front needs at least two strengths, got {len(front)}")
    seeds = len(front[0]["metrics"][x]["per_seed"])
    out = []
    for s in range(seeds):
        pts = sorted((r["metrics"][x]["per_seed"][s], r["metrics"][y]["per_seed"][s]) for r in front)
        if not pts[0][0] <= level <= pts[-1][0]:
            raise ValueError(
                f"{x} = {level} lies outside seed {s}'s front ({pts[0][0]:.3f}–{pts[-1][0]:.3f}): widen the sweep"
            )
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if x0 <= level <= x1:
                out.append(y0 if x1 == x0 else y0 + (y1 - y0) * (level - x0) / (x1 - x0))
                break
    return out


def compare_fronts(
    sag: list[dict],
    other: list[dict],
    *,
    level: float = 0.70,
    x: str = "content",
    y: str = "loss",
    lower_is_better: bool = True,
) -> dict:
    """The computed verdict of SAG against another method at matched ``x`` (content kept, or realism), over the
    evaluation seeds: ``SAG dominates`` (every seed's SAG value beats every seed's other value), ``SAG is dominated``
    (the reverse), or ``the fronts cross or overlap within spread``."""
    a, b = front_value(sag, level, x, y), front_value(other, level, x, y)
    sign = 1 if lower_is_better else -1
    if max(sign * v for v in a) < min(sign * v for v in b):
        outcome = "SAG dominates"
    elif min(sign * v for v in a) > max(sign * v for v in b):
        outcome = "SAG is dominated"
    else:
        outcome = "the fronts cross or overlap within spread"
    return {"outcome": outcome, "level": level, "x": x, "y": y, "sag": a, "other": b}


def _common_level(a: list[dict], b: list[dict], x: str) -> float | None:
    """The lowest ``x`` that every seed's front of both methods reaches (None when they share no range): for
    realism, the strongest-guidance end at which both can still be read."""
    lo, hi = [], []
    for front in (a, b):
        for s in range(len(front[0]["metrics"][x]["per_seed"])):
            vals = [r["metrics"][x]["per_seed"][s] for r in front]
            lo.append(min(vals))
            hi.append(max(vals))
    return max(lo) if max(lo) <= min(hi) else None


def front_verdicts(
    method_table: dict, sweep: dict | None, task: str, methods=FRONT_METHODS, level: float = CONTENT_LEVEL
) -> list[dict]:
    """Every SAG method of ``methods`` against every other one (FreeDoM, Universal Guidance) on ``task``'s fronts
    (:func:`fronts`), by :func:`compare_fronts`: at content ``level`` and at matched realism (the lowest realism
    both fronts reach on every seed). A comparison the fronts cannot make (a level outside a seed's sweep) is
    reported as ``"not covered by the sweep"``, with why."""
    fr = fronts(method_table, sweep, methods)
    y, lower = FRONT_Y[task]
    out = []
    others = [m for m in methods if not m.startswith("SAG")]
    for m in [m for m in methods if m.startswith("SAG")]:
        for other in others:
            for x in ("content", "realism"):
                lv = level if x == "content" else _common_level(fr[m], fr[other], x)
                base = {"task": task, "sag_method": m, "other_method": other, "x": x, "y": y, "level": lv}
                if lv is None:
                    out.append(base | {"outcome": "not covered by the sweep", "why": "no common realism range"})
                    continue
                try:
                    out.append(base | compare_fronts(fr[m], fr[other], level=lv, x=x, y=y, lower_is_better=lower))
                except ValueError as e:
                    out.append(base | {"outcome": "not covered by the sweep", "why": str(e)})
    return out


def _fmt(vals: list[float]) -> str:
    mean = sum(vals) / len(vals)
    return f"{mean:.3f}" if len(vals) == 1 else f"{mean:.3f} [{min(vals):.3f}–{max(vals):.3f}]"


def verdict_line(v: dict) -> str:
    """One computed sentence of *Paper vs. toy* from a :func:`front_verdicts` entry."""
    at = f"{v['x']} {v['level']:.3f}" if v["level"] is not None else f"matched {v['x']}"
    if v["outcome"] == "not covered by the sweep":
        return f"{v['task']}, at {at}: {v['sag_method']} vs {v['other_method']} — not covered ({v['why']})"
    return (
        f"{v['task']}, at {at}: {v['sag_method']} {v['y']} {_fmt(v['sag'])} vs {v['other_method']} "
        f"{_fmt(v['other'])} → **{v['outcome']}**"
    )


def claim_verdicts(tables: dict) -> dict[str, dict]:
    """The paper's three claims (see notebook 01, *Paper vs. toy*) as computed verdicts from the stored tables, each
    ``{"holds": bool | None, "lines": [...]}`` (None: mixed)."""
    em = tables["exactness_memory"]["rows"]
    worst64 = max(r["rel_err_float64"] for r in em)
    worst32 = max(r["rel_err_float32"] for r in em)
    ratio16 = max(r["ratio"] for r in em)
    peaks = [r["adjoint_peak_bytes"] for r in em]
    flat = max(peaks) <= 1.5 * min(peaks)
    est = {(r["index"], r["n"]): r["metrics"] for r in tables["estimate"]["rows"]}
    levels = sorted({i for i, _ in est})
    falls = all(
        est[(i, a)]["rms_error"]["mean"] >= est[(i, b)]["rms_error"]["mean"]
        for i in levels
        for a, b in zip(N_GRID, N_GRID[1:])
    )
    hi = levels[0]
    cos1, cos8 = est[(hi, 1)]["grad_cosine"]["mean"], est[(hi, N_GRID[-1])]["grad_cosine"]["mean"]
    claim1 = {
        "holds": falls and cos8 > cos1,
        "lines": [
            f"estimate error falls with n at every level: {'yes' if falls else 'no'}; at the highest noise "
            f"(step {hi}) n=1 {est[(hi, 1)]['rms_error']['mean']:.3f} → n={N_GRID[-1]} "
            f"{est[(hi, N_GRID[-1])]['rms_error']['mean']:.3f}; gradient cosine to the fine solve {cos1:.2f} → "
            f"{cos8:.2f}"
        ],
    }
    claim2 = {
        "holds": worst64 <= 1e-5 and worst32 <= 1e-3 and flat and ratio16 >= 8,
        "lines": [
            f"adjoint vs autograd, n = {em[0]['n']}…{em[-1]['n']}: worst relative error {worst64:.1e} (float64), "
            f"{worst32:.1e} (float32); adjoint peak {min(peaks) / 1e6:.2f}–{max(peaks) / 1e6:.2f} MB "
            f"({'flat' if flat else 'not flat'} in n), autograd up to {ratio16:.1f}× it"
        ],
    }
    if "continuous_rel_err" in em[0]:
        worst_c = max(r["continuous_rel_err"] for r in em)
        claim2["lines"].append(
            f"the continuous adjoint (backward re-integration) on the same grids: relative error "
            f"{em[0]['continuous_rel_err']:.1e} (n = {em[0]['n']}) … {em[-1]['continuous_rel_err']:.1e} "
            f"(n = {em[-1]['n']}), worst {worst_c:.1e}: it is exact only as its step shrinks"
        )
    verdicts = []
    for task in ("style", "position"):
        if f"{task}_sweep" in tables:
            verdicts += front_verdicts(tables[task], tables[f"{task}_sweep"], task)
    outcomes = {v["outcome"] for v in verdicts}
    claim3 = {
        "holds": None
        if not verdicts
        else (
            True
            if outcomes == {"SAG dominates"}
            else False
            if outcomes <= {"SAG is dominated", "not covered by the sweep"}
            else None
        ),
        "lines": [verdict_line(v) for v in verdicts],
        "verdicts": verdicts,
    }
    # what the mechanism buys where guidance acts: the gradient's alignment with the fine solve inside the window
    ts = make_ddim_scheduler(make_train_scheduler(), STEPS).timesteps.tolist()
    window = GuidanceConfig().window
    inside = [i for i in levels if round(window[0] * STEPS) <= i < round(window[1] * STEPS)]
    if inside:
        claim3["lines"].append(
            f"inside the paper's guided window ({window[0]:g}–{window[1]:g} of the steps: t = {ts[inside[0]]}…"
            f"{ts[round(window[1] * STEPS) - 1]}; the estimate table's levels in it) the guidance gradient's cosine "
            "to the fine solve is, for n = 1: "
            + ", ".join(f"{est[(i, 1)]['grad_cosine']['mean']:.2f} at t = {ts[i]}" for i in inside)
            + f" (n = {N_GRID[-1]}: "
            + ", ".join(f"{est[(i, N_GRID[-1])]['grad_cosine']['mean']:.2f}" for i in inside)
            + f"); at t = {ts[hi]}, outside it, {cos1:.2f} against {cos8:.2f}"
        )
    if "style_long_outer" in tables:
        long = front_verdicts(tables["style_long_outer"], None, "style", LONG_METHODS)
        claim3["long_outer"] = long
        claim3["lines"] += [f"DDIM {LONG_OUTER_STEPS} outer steps, seed 0 — " + verdict_line(v) for v in long]
    return {"estimate": claim1, "exact_gradient": claim2, "guided_samples": claim3}
