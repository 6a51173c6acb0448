"""Chapter 02's evaluation: gradient fidelity and memory against N, the applications' outcomes
(``python -m bytecourse eval adjointdpm``), and the notebook's live slice.
"""

from __future__ import annotations

import time

import torch

from .. import text
from ..diffusion import initial_noise
from ..diffusion.classifier import get_classifier
from ..diffusion.image_model import EVAL_SEED_OFFSET, eval_captions
from ..diffusion.memory import SavedTensorMeter, tensor_bytes
from ..evaluation import outcome_of, seed_range_side, summarise
from .applications import (
    CONTENT_WEIGHT,
    CONTINUOUS_AUDIT,
    N_GRID,
    audit_gradient_error,
    effect_examples,
    learn_effect_word,
    make_ode,
    null_embedding,
    sample_with_word,
    security_audit,
    style_floor,
    style_loss,
    style_outcome,
    stylize,
)
from .solvers import (
    adaptive_adjoint_gradients,
    autograd_gradients,
    continuous_adjoint_gradients,
    discrete_adjoint_gradients,
)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0))


#: the converged reference every gradient is measured against: Heun on 200 log-ρ steps, differentiated exactly (the
#: discrete adjoint of that solve). Each sample's reference is checked against Heun on 100 steps: a sample whose three
#: gradients move by more than ``tolerance`` between the two is left out of the means (its ODE gradient has not
#: converged at 200 steps, so no route can be scored against it) and counted.
REFERENCE = {"method": "heun", "grid": "log_rho", "N": 200, "check_N": 100, "tolerance": 0.05}
#: samples (captions and noises) per evaluation seed, each differentiated on its own
SAMPLES = 3
#: (coordinates, grid) of the fidelity rows: the raw PF-ODE on the time grid, and the paper's ρ-coordinates on the
#: time grid, the log-ρ grid and (contrast) the ρ-uniform grid
SETTINGS = (("t", "time"), ("rho", "time"), ("rho", "log_rho"), ("rho", "rho"))
#: rtol = atol of torchdiffeq's adaptive ``odeint_adjoint`` rows (dopri5 in u = log ρ)
ADAPTIVE_TOLERANCES = (1e-3, 1e-4)


def _setup(model, seed: int, batch: int):
    """Seed ``seed``'s captions as conditioning embeddings, their null embeddings, the output layer θ (made
    differentiable; restore with the returned flags), the style loss and x_T."""
    caps = eval_captions(seed, 1, batch, model.config.image_size)
    c = model.text(text.encode(caps, model.config.caption_length)).detach()
    uncond = null_embedding(model, batch).detach()
    theta = list(model.out.parameters())
    was = [p.requires_grad for p in theta]
    for p in theta:
        p.requires_grad_(True)
    loss = style_loss()
    x_T = initial_noise((batch, 3, model.config.image_size, model.config.image_size), EVAL_SEED_OFFSET + seed)
    return c, uncond, theta, was, lambda x0: loss(x0).sum(), x_T


def _errors(prefix: str, g, ref) -> dict:
    """Relative errors of ∂L/∂x_T, ∂L/∂c, ∂L/∂θ (θ flattened) and the cosine of ∂L/∂x_T against ``ref``."""
    flat = lambda r: torch.cat([p.flatten() for p in r.grad_params[1:]])  # noqa: E731
    return {
        f"{prefix}_rel_x": relative_error(g.grad_x, ref.grad_x),
        f"{prefix}_cos_x": cosine(g.grad_x, ref.grad_x),
        f"{prefix}_rel_c": relative_error(g.grad_params[0], ref.grad_params[0]),
        f"{prefix}_rel_theta": relative_error(flat(g), flat(ref)),
    }


def _timed(route, *args):
    t0 = time.perf_counter()
    out = route(*args)
    return out, time.perf_counter() - t0


def fidelity(
    model,
    seed: int,
    ns=N_GRID,
    methods=("euler", "heun"),
    settings=SETTINGS,
    adaptive=ADAPTIVE_TOLERANCES,
    samples: int = SAMPLES,
    sample_ids: tuple[int, ...] | None = None,
    reference_check: bool = True,
) -> list[dict]:
    """Per sample of seed ``seed`` (each differentiated alone): each route's ∂L/∂x_T, ∂L/∂c and ∂L/∂θ (θ: the
    denoiser's output layer; L: the Gram style loss of x₀) against the converged reference :data:`REFERENCE`, and its
    wall time:

    - ``cont_*``: the continuous adjoint (the paper's route) on the row's solver, coordinates, grid and N;
    - ``disc_*``: the exact gradient of that same discretised solve (discrete adjoint): what the solver's own
      forward error leaves, whatever the route;
    - ``self_rel_x``: continuous vs discrete on the same grid, i.e. the error the backward pass adds;
    - ``ckpt_*`` (log-ρ rows): the continuous adjoint reading y from the forward states instead of re-integrating it
      (:func:`.solvers.continuous_adjoint_gradients` with ``checkpoints``), so the re-integration's share shows;
    - adaptive rows (``grid = "adaptive"``): torchdiffeq's ``odeint_adjoint`` at each tolerance, with its number of
      network evaluations.
    Every row carries ``sample``; each sample also gets a ``{"reference_check": …, "converged": …}`` row (without
    ``reference_check`` the check is skipped and the reference taken as converged)."""
    c_all, uncond_all, theta, was, loss_fn, x_all = _setup(model, seed, samples)
    rows = []
    try:
        for i in range(samples) if sample_ids is None else sample_ids:
            c, uncond, x_T = c_all[i : i + 1].clone().requires_grad_(True), uncond_all[i : i + 1], x_all[i : i + 1]
            wrt = [c, *theta]
            ref_ode = make_ode(model, c, REFERENCE["N"], "rho", uncond, REFERENCE["grid"])
            ref = discrete_adjoint_gradients(ref_ode, x_T, loss_fn, wrt, REFERENCE["method"])
            converged = True
            if reference_check:
                check_ode = make_ode(model, c, REFERENCE["check_N"], "rho", uncond, REFERENCE["grid"])
                check = _errors("check", discrete_adjoint_gradients(check_ode, x_T, loss_fn, wrt, "heun"), ref)
                moved = max(check[k] for k in ("check_rel_x", "check_rel_c", "check_rel_theta"))
                converged = moved <= REFERENCE["tolerance"]
                rows.append({"reference_check": True, "sample": i, "converged": float(converged), **check})
            if not converged:
                continue
            for method in methods:
                for coords, grid in settings:
                    for n in ns:
                        ode = make_ode(model, c, n, coords, uncond, grid)
                        cont, t_cont = _timed(continuous_adjoint_gradients, ode, x_T, loss_fn, wrt, method)
                        disc, t_disc = _timed(discrete_adjoint_gradients, ode, x_T, loss_fn, wrt, method)
                        row = {"method": method, "coords": coords, "grid": grid, "N": n, "sample": i}
                        row.update(_errors("cont", cont, ref) | _errors("disc", disc, ref))
                        row.update(self_rel_x=relative_error(cont.grad_x, disc.grad_x), cont_seconds=t_cont)
                        if grid == "log_rho":  # y read from the forward states: what re-integrating y costs
                            ckpt = continuous_adjoint_gradients(ode, x_T, loss_fn, wrt, method, checkpoints=True)
                            row.update(_errors("ckpt", ckpt, ref))
                        rows.append(row | {"disc_seconds": t_disc})
            for tol in adaptive:
                ode = make_ode(model, c, 1, "rho", uncond)
                (g, nfe), t_ad = _timed(adaptive_adjoint_gradients, ode, x_T, loss_fn, wrt, tol, tol)
                row = {"method": "dopri5", "coords": "rho", "grid": "adaptive", "N": tol, "sample": i}
                rows.append(row | _errors("cont", g, ref) | {"cont_seconds": t_ad, **nfe})
    finally:
        for p, flag in zip(theta, was):
            p.requires_grad_(flag)
    return rows


def _setting(method: str, coords: str, grid: str, n) -> str:
    if grid == "adaptive":
        return f"adaptive (torchdiffeq dopri5), rtol = atol = {n:g}"
    return f"{method}, {coords}-coords, {grid.replace('_', '-')} grid, N={n}"


def _mean(records: list[dict]) -> dict:
    return {k: sum(r[k] for r in records) / len(records) for k in records[0]}


def fidelity_table(
    model,
    seeds: list[int],
    ns=N_GRID,
    methods=("euler", "heun"),
    settings=SETTINGS,
    adaptive=ADAPTIVE_TOLERANCES,
    progress: bool = True,
    samples: int = SAMPLES,
) -> dict:
    """:func:`fidelity` over ``seeds``: each seed's value of a metric is its mean over the seed's samples with a
    converged reference. Also the first sample of the first seed alone (``first_sample``: the live slice's table;
    empty if that sample's reference did not converge, and then the live slice reports its rows as not stored)."""
    from tqdm.auto import tqdm

    per: dict[tuple, list[dict]] = {}
    checks, first = [], {}
    for seed in tqdm(seeds, disable=not progress, desc="gradient fidelity"):
        by_key: dict[tuple, list[dict]] = {}
        for r in fidelity(model, seed, ns, methods, settings, adaptive, samples):
            sample = r.pop("sample")
            if r.pop("reference_check", False):
                checks.append({"seed": seed, "sample": sample, **r})
                continue
            key = (r.pop("method"), r.pop("coords"), r.pop("grid"), r.pop("N"))
            by_key.setdefault(key, []).append(r)
            if seed == seeds[0] and sample == 0:
                first[key] = r
        for key, records in by_key.items():
            per.setdefault(key, []).append(_mean(records))
    rows = [
        {
            "setting": _setting(*key),
            "method": key[0],
            "coords": key[1],
            "grid": key[2],
            "N": key[3],
            "metrics": summarise(v),
        }
        for key, v in per.items()
    ]
    kept = [c for c in checks if c["converged"]]
    return {
        "rows": rows,
        "seeds": list(seeds),
        "samples_per_seed": samples,
        "setting_name": "solver, coordinates, grid, steps",
        "reference": {
            **REFERENCE,
            "checks": checks,
            "converged": len(kept),
            "samples": len(checks),
            "check": summarise([{k: v for k, v in c.items() if k.startswith("check_")} for c in kept or checks]),
        },
        "first_sample": _first_sample_table(first),
        "note": "loss: Gram style loss of the generated x0; theta = the denoiser's output layer; reference = Heun on "
        f"{REFERENCE['N']} log-rho steps, differentiated exactly; seconds: wall time of each route on this machine",
    }


def _first_sample_table(first: dict) -> dict:
    rows = [
        {
            "setting": _setting(*key),
            **dict(zip(("method", "coords", "grid", "N"), key)),
            "metrics": summarise([{k: v for k, v in r.items() if not k.endswith("_seconds")}]),
        }
        for key, r in first.items()
    ]
    return {"rows": rows, "setting_name": "solver, coordinates, grid, steps (seed 0, sample 0)"}


def fidelity_verdicts(table: dict, n: int = 20, floor: float = 0.1) -> dict[str, dict]:
    """The issue's two claims, from a fidelity table: (1) Heun on the log-ρ grid in ρ-coordinates at N = ``n`` is
    within ``floor`` of the converged gradient for x_T, c and θ (every seed); (2) for Euler and for Heun, that row's
    ∂L/∂x_T, ∂L/∂c and ∂L/∂θ errors are below the t-coordinate row's (time grid) at N = ``n``, by the substrate's
    seed-range rule (:func:`~bytecourse.evaluation.seed_range_side`, :func:`~bytecourse.evaluation.outcome_of`)."""
    rows = {(r["method"], r["coords"], r["grid"], r["N"]): r["metrics"] for r in table["rows"]}
    keys = ("cont_rel_x", "cont_rel_c", "cont_rel_theta")
    out = {}
    heun = rows[("heun", "rho", "log_rho", n)]
    worst = {k: heun[k]["max"] for k in keys}
    ok = all(v <= floor for v in worst.values())
    out["heun_log_rho_floor"] = {
        "outcome": "reproduced" if ok else "not reproduced",
        "line": f"Heun, ρ-coords, log-ρ grid, N={n}: worst relative error over seeds x_T {worst['cont_rel_x']:.3g}, "
        f"c {worst['cont_rel_c']:.3g}, θ {worst['cont_rel_theta']:.3g} (target ≤ {floor:g}) → "
        + ("reproduced" if ok else "NOT reproduced"),
    }
    for method in ("euler", "heun"):
        ours, raw = rows[(method, "rho", "log_rho", n)], rows[(method, "t", "time", n)]
        sides = [seed_range_side(ours[k], raw[k], higher_is_better=False) for k in keys]
        outcome = outcome_of(sides, len(ours[keys[0]].get("per_seed", table.get("seeds", []))))
        out[f"{method}_below_t"] = {
            "outcome": outcome,
            "line": f"{method.capitalize()}, N={n}: log-ρ grid in ρ vs time grid in t, relative error "
            + ", ".join(f"{k.split('_')[-1]} {ours[k]['mean']:.3g} vs {raw[k]['mean']:.3g}" for k in keys)
            + f" → {outcome.upper() if outcome == 'not reproduced' else outcome}",
        }
    return out


def application_verdicts(tables: dict) -> dict[str, dict]:
    """The three applications against the issue's targets, from the stored tables (means over seeds): (a) ≥ 0.8
    flipped within the budget (each route's row); (b) effect rate on fresh noise ≥ 2× the base rate with content
    ≥ 0.6 (each objective's row); (c) Gram ratio ≤ 0.5 with content kept ≥ 0.8. Each: outcome and a computed line;
    the suspect lines of (b) and (c) are measurements (outcome ``"measurement"``)."""
    out = {}
    for i, row in enumerate(tables["audit"]["rows"]):
        a = row["metrics"]
        ok = a["flipped"]["mean"] >= 0.8 and a["rel_delta"]["max"] <= 0.2 + 1e-4
        extra = f"; first gradient {a['grad_rel_error']['mean']:.2f} from exact" if "grad_rel_error" in a else ""
        out[f"audit_{i}"] = {
            "outcome": "reproduced" if ok else "not reproduced",
            "line": f"(a) {row['setting']}: flipped {a['flipped']['mean']:.2f} [{a['flipped']['min']:.2f}–"
            f"{a['flipped']['max']:.2f}], oracle colour changed {a['oracle_colour_changed']['mean']:.2f}, ‖Δ‖/‖x_T‖ "
            f"≤ {a['rel_delta']['max']:.3f}{extra} → " + ("reproduced" if ok else "NOT reproduced"),
        }
    for i, row in enumerate(tables["effect"]["rows"]):
        e = row["metrics"]
        ratio = e["effect"]["mean"] / max(e["base_effect"]["mean"], 1e-9)
        ok = ratio >= 2 and e["content"]["mean"] >= 0.6
        out[f"effect_{i}"] = {
            "outcome": "reproduced" if ok else "not reproduced",
            "line": f"(b) {row['setting']}: effect {e['effect']['mean']:.2f} [{e['effect']['min']:.2f}–"
            f"{e['effect']['max']:.2f}] vs base {e['base_effect']['mean']:.2f} ({ratio:.2f}×, target ≥ 2×), content "
            f"{e['content']['mean']:.2f} (base {e['base_content']['mean']:.2f}, target ≥ 0.6), realism "
            f"{e['realism']['mean']:.2f} (base {e['base_realism']['mean']:.2f}) → "
            + ("reproduced" if ok else "NOT reproduced"),
        }
    rows = tables["effect"]["rows"]
    if rows and "loss_first" in rows[-1]["metrics"]:
        e = rows[-1]["metrics"]
        out["effect_suspect"] = {
            "outcome": "measurement",
            "line": f"(b) suspect, the size statistic ({rows[-1]['setting']}): training loss "
            f"{e['loss_first']['mean']:.3f} → {e['loss_last']['mean']:.3f} (the soft size met on the training "
            f"batches), yet the oracle finds the effect in {e['effect']['mean']:.2f} of fresh samples and realism "
            f"falls {e['base_realism']['mean']:.2f} → {e['realism']['mean']:.2f} (our reading: the word spreads the "
            "caption's colour over more pixels rather than drawing a larger well-formed shape)",
        }
    st = tables["style"]["rows"][0]["metrics"]
    ok = st["gram_ratio"]["mean"] <= 0.5 and st["content_kept"]["mean"] >= 0.8
    out["style"] = {
        "outcome": "reproduced" if ok else "not reproduced",
        "line": f"(c) Gram ratio {st['gram_ratio']['mean']:.2f} [{st['gram_ratio']['min']:.2f}–"
        f"{st['gram_ratio']['max']:.2f}] (target ≤ 0.5), content kept {st['content_kept']['mean']:.2f} (target ≥ 0.8) "
        "→ " + ("reproduced" if ok else "NOT reproduced"),
    }
    floor = tables["style"].get("floor")
    if floor is not None:
        out["style_floor"] = {
            "outcome": "measurement",
            "line": f"(c) suspect, the loss: the world's own textured images (the reference's style, any content) "
            f"score {floor['textured_world']:.2f} against the reference, plain world images "
            f"{floor['plain_world']:.2f} (ratio {floor['textured_over_plain']:.2f}); textured world images whose "
            f"object has the reference's colour {floor['reference_colour']:.2f}, the other colours "
            f"{floor['other_colours']:.2f}. The Gram loss measures the object's colour more than the texture, so no "
            "model that keeps the captions' colours can halve it",
        }
    return out


def memory_table(model, ns=N_GRID, method: str = "euler") -> dict:
    """Peak bytes held for the backward pass (stored states/augmented state + saved tensors of live graphs; weights not
    counted) for the three routes, ∂L/∂x_T only, batch 1."""
    caps = eval_captions(0, 1, 1, model.config.image_size)
    tokens = text.encode(caps, model.config.caption_length)
    loss = style_loss()
    loss_fn = lambda x0: loss(x0).sum()  # noqa: E731
    x_T = initial_noise((1, 3, model.config.image_size, model.config.image_size), 3)
    params = list(model.parameters())
    rows = []
    for n in ns:
        ode = make_ode(model, tokens, n, "rho")
        row = {"N": n}
        for name, route in (
            ("continuous", continuous_adjoint_gradients),
            ("discrete", discrete_adjoint_gradients),
            ("autograd", autograd_gradients),
        ):
            with SavedTensorMeter(exclude=params) as meter:
                if name == "discrete":
                    meter.hold(tensor_bytes(x_T) * (n + 1))  # the stored states
                elif name == "continuous":
                    meter.hold(tensor_bytes(x_T) * 2)  # the augmented state (y, a)
                route(ode, x_T, loss_fn, (), method)
            row[f"{name}_peak_bytes"] = meter.peak_bytes
        rows.append(row)
    return {"rows": rows, "method": method, "coords": "rho", "batch": 1}


def applications(model, seeds: list[int], progress: bool = True) -> dict:
    """The three mini-applications over evaluation seeds (each seed: its own samples/examples and run)."""
    from tqdm.auto import tqdm

    clf = get_classifier()[0]
    audit, audit_cont, effect, effect_alone, style = [], [], [], [], []
    for seed in tqdm(seeds, disable=not progress, desc="applications"):
        r = security_audit(model, clf, seed)
        audit.append({k: r[k] for k in ("flipped", "oracle_colour_changed", "rel_delta")})
        # the paper's route drives the same attack, on a sampler where it is accurate (CONTINUOUS_AUDIT)
        r = security_audit(model, clf, seed, route="continuous", **CONTINUOUS_AUDIT)
        kept = {k: r[k] for k in ("flipped", "oracle_colour_changed", "rel_delta")}
        audit_cont.append(kept | audit_gradient_error(model, clf, seed, **CONTINUOUS_AUDIT))
        examples, caps = effect_examples(8, seed)
        base = sample_with_word(model, None, seed)
        for weight, rows in ((CONTENT_WEIGHT, effect), (0.0, effect_alone)):
            word, curve = learn_effect_word(model, examples, caps, seed=seed, content_weight=weight, classifier=clf)
            learned = sample_with_word(model, word, seed)
            rows.append(
                {
                    "base_effect": base["effect"],
                    "effect": learned["effect"],
                    "base_content": base["content"],
                    "content": learned["content"],
                    "base_realism": base["realism"],
                    "realism": learned["realism"],
                    "word_norm": float(word.norm()),
                    "loss_first": curve[0],
                    "loss_last": curve[-1],
                }
            )
        tuned, curve = stylize(model, seed=seed)
        b, s = style_outcome(model, seed), style_outcome(tuned, seed)
        style.append(
            {
                "base_gram": b["gram_loss"],
                "gram": s["gram_loss"],
                "gram_ratio": s["gram_loss"] / b["gram_loss"],
                "base_colour": b["colour"],
                "colour": s["colour"],
                "base_shape": b["shape"],
                "shape": s["shape"],
                "content_kept": (s["colour"] + s["shape"]) / max(1e-9, b["colour"] + b["shape"]),
            }
        )
    return {
        "audit": {
            "rows": [
                {"setting": "x_T attack (budget 0.2, 10 iterations), discrete adjoint", "metrics": summarise(audit)},
                {
                    "setting": "same, continuous adjoint (the paper's route), {method} on {num_steps} {grid} "
                    "steps".format(**CONTINUOUS_AUDIT),
                    "metrics": summarise(audit_cont),
                },
            ],
            "seeds": list(seeds),
            "samples_per_seed": 8,
            "setting_name": "(a) security audit",
            "target": "≥80% flipped with ‖Δx_T‖/‖x_T‖ ≤ 0.2",
        },
        "effect": {
            "rows": [
                {
                    "setting": f"new word: size hinge + content term (weight {CONTENT_WEIGHT:g})",
                    "metrics": summarise(effect),
                },
                {"setting": "new word: size hinge alone", "metrics": summarise(effect_alone)},
            ],
            "seeds": list(seeds),
            "samples_per_seed": 24,
            "setting_name": "(b) visual-effect inversion (effect: the object drawn large)",
            "target": "effect rate on fresh noise ≥ 2× the base rate, content ≥ 0.6",
        },
        "style": {
            "rows": [{"setting": "fine-tune output layers (20 steps)", "metrics": summarise(style)}],
            "seeds": list(seeds),
            "samples_per_seed": 24,
            "setting_name": "(c) stylization",
            "target": "Gram ratio ≤ 0.5, content kept ≥ 0.8",
            "floor": style_floor(),
        },
    }


def evaluate_adjointdpm(model, seeds: list[int], progress: bool = True, part: str | None = None) -> dict:
    """Every table, or one ``part``: ``"fidelity"`` (gradient fidelity and memory) or ``"applications"``."""
    t0 = time.time()
    tables = {}
    if part in (None, "fidelity"):
        fid = fidelity_table(model, seeds, progress=progress)
        tables |= {"fidelity": fid, "fidelity_first_sample": fid.pop("first_sample"), "memory": memory_table(model)}
    if part in (None, "applications"):
        tables |= applications(model, seeds, progress=progress)
    tables["wall_time_s"] = round(time.time() - t0, 1)
    return tables


def cli_eval(args) -> dict:
    from ..device import default_device
    from ..diffusion.image_model import load_image_model

    model, _ = load_image_model(default_device(args.device))
    return evaluate_adjointdpm(model, list(args.seeds), part=getattr(args, "part", None))


SLICE_TOLERANCE = 1e-3  # relative errors and cosines: same code, seed and float type


def fidelity_suspects(table: dict, method: str = "heun", n: int = 20, adaptive: bool = True) -> list[str]:
    """What each suspect of the continuous adjoint's error is worth, read off a fidelity table at ``method`` and N =
    ``n`` (means over seeds of the ∂L/∂x_T relative error against the converged reference), one computed line each;
    with ``adaptive``, a line per adaptive-route row too."""
    rows = {(r["method"], r["coords"], r["grid"], r["N"]): r["metrics"] for r in table["rows"]}
    x = lambda key, m="cont_rel_x": rows[key][m]["mean"] if key in rows and m in rows[key] else float("nan")  # noqa: E731
    ours = (method, "rho", "log_rho", n)
    lines = [
        f"{method.capitalize()}, N={n}, ρ-coordinates, log-ρ grid: continuous adjoint {x(ours):.3g}; the exact "
        f"gradient of the same {n}-step solve {x(ours, 'disc_rel_x'):.3g} (what the forward solve alone leaves); "
        f"reading y from the forward states instead of re-integrating it {x(ours, 'ckpt_rel_x'):.3g}",
        f"the grid, same solver and N, ρ-coordinates: time grid {x((method, 'rho', 'time', n)):.3g}, log-ρ grid "
        f"{x(ours):.3g}, ρ-uniform grid {x((method, 'rho', 'rho', n)):.3g}",
        f"the coordinates, time grid: t {x((method, 't', 'time', n)):.3g} vs ρ {x((method, 'rho', 'time', n)):.3g}",
    ]
    steps = sorted(k[3] for k in rows if k[:3] == ours[:3])
    enough = next((k for k in steps if x((method, "rho", "log_rho", k)) <= 0.1), None)
    lines.append(
        f"steps needed for an error ≤ 0.1 ({method}, log-ρ grid): "
        + (f"N = {enough}" if enough is not None else f"not reached up to N = {steps[-1]}")
    )
    for key, m in rows.items():
        if adaptive and key[2] == "adaptive":
            lines.append(
                f"adaptive dopri5 at rtol = atol = {key[3]:g}: {m['cont_rel_x']['mean']:.3g}, with "
                f"{m['nfe_forward']['mean']:.0f} + {m['nfe_backward']['mean']:.0f} network evaluations"
            )
    return lines


def fidelity_subset(table: dict, grids: tuple[str, ...]) -> dict:
    """The fidelity table's rows on ``grids`` (``"adaptive"`` for the torchdiffeq rows), for display."""
    return {**table, "rows": [r for r in table["rows"] if r["grid"] in grids]}


def plot_fidelity(table: dict, metric: str = "cont_rel_x"):
    """Error against N (one panel per solver) and against wall time (all rows, the adaptive route included), from a
    fidelity table: means over seeds, log scales."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    styles = {("t", "time"): "C3", ("rho", "time"): "C1", ("rho", "log_rho"): "C0", ("rho", "rho"): "C7"}
    for ax, method in zip(axes[:2], ("euler", "heun")):
        for (coords, grid), colour in styles.items():
            rows = [r for r in table["rows"] if (r["method"], r["coords"], r["grid"]) == (method, coords, grid)]
            if not rows:
                continue
            ns = [r["N"] for r in rows]
            label = f"{coords}-coords, {grid.replace('_', '-')} grid"
            ax.plot(ns, [r["metrics"][metric]["mean"] for r in rows], "o-", color=colour, label=label)
            if grid == "log_rho":
                ax.plot(
                    ns,
                    [r["metrics"]["disc_rel_x"]["mean"] for r in rows],
                    "o--",
                    color=colour,
                    alpha=0.6,
                    label="same solve, exact gradient (discrete adjoint)",
                )
        ax.axhline(0.1, color="k", lw=0.6, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="steps N", title=f"{method}: continuous adjoint vs reference")
        ax.set_ylabel("relative error of ∂L/∂x_T")
    axes[0].legend(fontsize=7)
    ax = axes[2]
    for r in table["rows"]:
        colour = "C2" if r["grid"] == "adaptive" else styles.get((r["coords"], r["grid"]), "k")
        marker = "s" if r["grid"] == "adaptive" else ("o" if r["method"] == "heun" else "^")
        ax.scatter(r["metrics"]["cont_seconds"]["mean"], r["metrics"][metric]["mean"], color=colour, marker=marker)
    ax.axhline(0.1, color="k", lw=0.6, ls=":")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="wall time of the continuous adjoint (s)",
        title="error against cost (▲ Euler, ● Heun, ■ adaptive)",
    )
    fig.tight_layout()
    return fig


def live_slice(model, ns: tuple[int, ...] = (10,)) -> dict:
    """The first sample of evaluation seed 0 (Heun, ρ-coordinates on the time and log-ρ grids, ``ns`` steps, against
    the converged reference), recomputed: the stored tables' ``fidelity_first_sample``. Wall times are left out (they
    belong to the machine, not to the code)."""
    settings = (("rho", "time"), ("rho", "log_rho"))
    first = {}
    for r in fidelity(model, 0, ns, ("heun",), settings, adaptive=(), sample_ids=(0,), reference_check=False):
        key = (r.pop("method"), r.pop("coords"), r.pop("grid"), r.pop("N"))
        r.pop("sample")
        first[key] = r
    return {"fidelity_first_sample": _first_sample_table(first)}
