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
from ..evaluation import summarise
from .applications import (
    N_GRID,
    effect_examples,
    learn_effect_word,
    make_ode,
    null_embedding,
    sample_with_word,
    security_audit,
    style_loss,
    style_outcome,
    stylize,
)
from .solvers import autograd_gradients, continuous_adjoint_gradients, discrete_adjoint_gradients


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0))


def fidelity(model, seed: int, ns=N_GRID, methods=("euler",), batch: int = 2) -> list[dict]:
    """Relative error and cosine of the continuous adjoint's ∂L/∂x_T, ∂L/∂c and ∂L/∂θ (θ: the output layer) against
    autograd through the same solver, in t- and ρ-coordinates; the discrete adjoint's error beside it."""
    caps = eval_captions(seed, 1, batch, model.config.image_size)
    c = model.text(text.encode(caps, model.config.caption_length)).detach().requires_grad_(True)
    uncond = null_embedding(model, batch).detach()
    theta = [p for p in model.out.parameters()]
    was = [p.requires_grad for p in theta]
    for p in theta:
        p.requires_grad_(True)
    loss = style_loss()
    loss_fn = lambda x0: loss(x0).sum()  # noqa: E731
    x_T = initial_noise((batch, 3, model.config.image_size, model.config.image_size), EVAL_SEED_OFFSET + seed)
    rows = []
    try:
        for method in methods:
            for coords in ("t", "rho"):
                for n in ns:
                    ode = make_ode(model, c, n, coords, uncond)
                    ref = autograd_gradients(ode, x_T, loss_fn, [c, *theta], method)
                    cont = continuous_adjoint_gradients(ode, x_T, loss_fn, [c, *theta], method)
                    disc = discrete_adjoint_gradients(ode, x_T, loss_fn, [c, *theta], method)
                    th_ref = torch.cat([g.flatten() for g in ref.grad_params[1:]])
                    th_cont = torch.cat([g.flatten() for g in cont.grad_params[1:]])
                    th_disc = torch.cat([g.flatten() for g in disc.grad_params[1:]])
                    rows.append(
                        {
                            "method": method,
                            "coords": coords,
                            "N": n,
                            "cont_rel_x": relative_error(cont.grad_x, ref.grad_x),
                            "cont_cos_x": cosine(cont.grad_x, ref.grad_x),
                            "cont_rel_c": relative_error(cont.grad_params[0], ref.grad_params[0]),
                            "cont_cos_c": cosine(cont.grad_params[0], ref.grad_params[0]),
                            "cont_rel_theta": relative_error(th_cont, th_ref),
                            "cont_cos_theta": cosine(th_cont, th_ref),
                            "disc_rel_x": relative_error(disc.grad_x, ref.grad_x),
                            "disc_rel_c": relative_error(disc.grad_params[0], ref.grad_params[0]),
                            "disc_rel_theta": relative_error(th_disc, th_ref),
                        }
                    )
    finally:
        for p, flag in zip(theta, was):
            p.requires_grad_(flag)
    return rows


def fidelity_table(model, seeds: list[int], ns=N_GRID, methods=("euler", "heun"), progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    per: dict[tuple, list[dict]] = {}
    for seed in tqdm(seeds, disable=not progress, desc="gradient fidelity"):
        for r in fidelity(model, seed, ns, methods):
            key = (r["method"], r["coords"], r["N"])
            per.setdefault(key, []).append({k: v for k, v in r.items() if k not in ("method", "coords", "N")})
    rows = [
        {"setting": f"{m}, {c}-coords, N={n}", "method": m, "coords": c, "N": n, "metrics": summarise(v)}
        for (m, c, n), v in per.items()
    ]
    return {
        "rows": rows,
        "seeds": list(seeds),
        "samples_per_seed": 2,
        "setting_name": "solver, coordinates, steps",
        "note": "loss: Gram style loss of the generated x0; theta = the denoiser's output layer; reference = autograd "
        "through the same solver",
    }


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
    audit, effect, style = [], [], []
    for seed in tqdm(seeds, disable=not progress, desc="applications"):
        r = security_audit(model, clf, seed)
        audit.append({k: r[k] for k in ("flipped", "oracle_colour_changed", "rel_delta")})
        examples, caps = effect_examples(8, seed)
        word, curve = learn_effect_word(model, examples, caps, seed=seed)
        base, learned = sample_with_word(model, None, seed), sample_with_word(model, word, seed)
        effect.append(
            {
                "base_left_hit": base["left_hit"],
                "left_hit": learned["left_hit"],
                "base_content": base["content"],
                "content": learned["content"],
                "mse_first": curve[0],
                "mse_last": curve[-1],
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
            "rows": [{"setting": "x_T attack (budget 0.2, 10 iterations)", "metrics": summarise(audit)}],
            "seeds": list(seeds),
            "samples_per_seed": 8,
            "setting_name": "(a) security audit",
            "target": "≥80% flipped with ‖Δx_T‖/‖x_T‖ ≤ 0.2",
        },
        "effect": {
            "rows": [{"setting": "new word from 8 examples (left third)", "metrics": summarise(effect)}],
            "seeds": list(seeds),
            "samples_per_seed": 24,
            "setting_name": "(b) visual-effect inversion",
            "target": "effect in ≥70% of samples (vs base rate)",
        },
        "style": {
            "rows": [{"setting": "fine-tune output layers (20 steps)", "metrics": summarise(style)}],
            "seeds": list(seeds),
            "samples_per_seed": 24,
            "setting_name": "(c) stylization",
            "target": "Gram loss halves, ≥90% of colour/shape content kept",
        },
    }


def evaluate_adjointdpm(model, seeds: list[int], progress: bool = True) -> dict:
    t0 = time.time()
    tables = {
        "fidelity": fidelity_table(model, seeds, progress=progress),
        "memory": memory_table(model),
        **applications(model, seeds, progress=progress),
    }
    tables["wall_time_s"] = round(time.time() - t0, 1)
    return tables


def cli_eval(args) -> dict:
    from ..device import default_device
    from ..diffusion.image_model import load_image_model

    model, _ = load_image_model(default_device(args.device))
    return evaluate_adjointdpm(model, list(args.seeds))


SLICE_TOLERANCE = 1e-3  # relative errors and cosines: same code, seed and float type


def live_slice(model, ns: tuple[int, ...] = (5, 10)) -> dict:
    """Evaluation seed 0 of the gradient-fidelity table (Euler, ``ns`` steps), recomputed."""
    return {"fidelity": fidelity_table(model, [0], ns=ns, methods=("euler",), progress=False)}
