"""Chapter 02's experiments: gradient fidelity and memory, the three mini-applications, the widget.

All generation here is the *unclipped* PF-ODE from ``T_MAX = 980`` to level 0 on a time-uniform grid with CFG 2.
Why not 999: the cosine schedule ends at ᾱ₉₉₉ ≈ 2.4·10⁻⁹, so ρ_T = σ/α ≈ 2·10⁴ and the first Euler step multiplies
every ε̂ error by that (samples blow up to |x| ~ 10³). At 980, ρ ≈ 34, x_T ~ N(0, I) is still within 3% of the
model's x_T distribution, and unclipped ODE samples are as good as the primer's clipped DDIM ones.

Mini-applications (the paper's §4 at toy scale; gradients by the exact discrete adjoint, see below):

(a) *security audit* — optimise x_T (‖Δx_T‖ ≤ 0.2‖x_T‖ per sample, projected) so that the frozen clean-image
    classifier changes its colour label on the generated image; the oracle says whether the colour really changed.
(b) *visual-effect inversion* — learn a new conditioning vector ("a new word": a learned context row added to the
    caption's embedding at its first padding position) from 8 example images showing an effect (the object in the
    left third), by the paper's MSE-to-examples loss; the oracle measures the effect on fresh noise and captions.
(c) *stylization* — fine-tune the output layers of the denoiser against one reference image's Gram loss; the
    oracle checks that colour and shape content survive.

Why the exact discrete adjoint for the applications: the fidelity table shows that at the step counts a CPU can
afford (N ≤ 20), the continuous adjoint's gradient through this UNet is far from the true gradient of the
sampler (relative error ≫ 1); the discrete adjoint has the same flat memory and is exact.
"""

from __future__ import annotations

import time

import torch

from .. import text
from ..diffusion import guided_eps, initial_noise, make_train_scheduler, to_image_space
from ..diffusion.classifier import get_classifier
from ..diffusion.losses import GramStyleLoss
from ..diffusion.memory import SavedTensorMeter, tensor_bytes
from ..diffusion.primer import DEFAULT_CFG, EVAL_SEED_OFFSET, eval_captions
from ..evaluation import summarise
from ..worlds import ShapesConfig, make_shapes
from .solvers import PFODE, ROUTES, autograd_gradients, continuous_adjoint_gradients, discrete_adjoint_gradients, generate, time_grid

CHECKPOINT = None  # AdjointDPM's applications optimise noise, embeddings and weights at run time: no shipped weights
TABLE_KEY = "adjointdpm"
T_MAX = 980
N_GRID = (5, 10, 20, 50)
APP_STEPS = 10  # ODE steps used by the applications
STYLE_REFERENCE_SEED = 5


def eps_for(model, cond, uncond=None, cfg_scale: float = DEFAULT_CFG):
    """ε̂(x, t) with CFG for a caption's tokens or a conditioning embedding (then ``uncond`` is its null embedding)."""
    return lambda x, t: guided_eps(model, x, t, cond, cfg_scale, uncond)


def make_ode(model, cond, num_steps: int, coords: str = "rho", uncond=None) -> PFODE:
    return PFODE(eps_for(model, cond, uncond), make_train_scheduler().alphas_cumprod, time_grid(num_steps, T_MAX), coords)


def start_level_facts(num_steps: int = 10) -> dict[str, float]:
    """The schedule numbers behind ``T_MAX`` (for the notebook): ᾱ and ρ = σ/α at 999 and at T_MAX, the signal weight
    α at T_MAX, and the first ρ-step of a time-uniform grid."""
    acp = make_train_scheduler().alphas_cumprod.double()
    rho = lambda t: float(((1 - acp[t]) / acp[t]).sqrt())  # noqa: E731
    grid = time_grid(num_steps, T_MAX)
    return {"abar_999": float(acp[999]), "rho_999": rho(999), "abar_T": float(acp[T_MAX]), "rho_T": rho(T_MAX),
            "alpha_T": float(acp[T_MAX].sqrt()), "first_step_from": rho(grid[0]), "first_step_to": rho(grid[1]),
            "num_steps": num_steps}


def null_embedding(model, batch: int) -> torch.Tensor:
    from ..text import PAD_ID

    return model.text(torch.full((batch, model.config.caption_length), PAD_ID, dtype=torch.long))


def style_loss() -> GramStyleLoss:
    b = make_shapes(1, STYLE_REFERENCE_SEED, ShapesConfig(textured=True), num_objects=1)
    return GramStyleLoss(b.images[0] * 2 - 1)


# ----------------------------------------------------------------------------------------- fidelity + memory


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
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
                    th_ref = torch.cat([g.flatten() for g in ref.params[1:]])
                    th_cont = torch.cat([g.flatten() for g in cont.params[1:]])
                    th_disc = torch.cat([g.flatten() for g in disc.params[1:]])
                    rows.append({"method": method, "coords": coords, "N": n,
                                 "cont_rel_x": _rel(cont.x_T, ref.x_T), "cont_cos_x": _cos(cont.x_T, ref.x_T),
                                 "cont_rel_c": _rel(cont.params[0], ref.params[0]), "cont_cos_c": _cos(cont.params[0], ref.params[0]),
                                 "cont_rel_theta": _rel(th_cont, th_ref), "cont_cos_theta": _cos(th_cont, th_ref),
                                 "disc_rel_x": _rel(disc.x_T, ref.x_T), "disc_rel_c": _rel(disc.params[0], ref.params[0]),
                                 "disc_rel_theta": _rel(th_disc, th_ref)})
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
    rows = [{"setting": f"{m}, {c}-coords, N={n}", "method": m, "coords": c, "N": n, "metrics": summarise(v)}
            for (m, c, n), v in per.items()]
    return {"rows": rows, "seeds": list(seeds), "samples_per_seed": 2, "setting_name": "solver, coordinates, steps",
            "note": "loss: Gram style loss of the generated x0; theta = the denoiser's output layer; reference = autograd through the same solver"}


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
        for name, route in (("continuous", continuous_adjoint_gradients), ("discrete", discrete_adjoint_gradients),
                            ("autograd", autograd_gradients)):
            with SavedTensorMeter(exclude=params) as meter:
                if name == "discrete":
                    meter.hold(tensor_bytes(x_T) * (n + 1))  # the stored states
                elif name == "continuous":
                    meter.hold(tensor_bytes(x_T) * 2)  # the augmented state (y, a)
                route(ode, x_T, loss_fn, (), method)
            row[f"{name}_peak_bytes"] = meter.peak_bytes
        rows.append(row)
    return {"rows": rows, "method": method, "coords": "rho", "batch": 1}


# ------------------------------------------------------------------------------------------ applications


def _project(delta: torch.Tensor, x_T: torch.Tensor, budget: float) -> torch.Tensor:
    """Scale each sample's Δ so that ‖Δ‖ ≤ budget·‖x_T‖."""
    norms = delta.flatten(1).norm(dim=1)
    limit = budget * x_T.flatten(1).norm(dim=1)
    scale = torch.where(norms > limit, limit / norms.clamp_min(1e-12), torch.ones_like(norms))
    return delta * scale.view(-1, 1, 1, 1)


def security_audit(model, classifier, seed: int, n: int = 8, iters: int = 10, budget: float = 0.2, lr: float = 0.05,
                   route: str = "discrete", num_steps: int = APP_STEPS, on_iter=None) -> dict:
    """(a) Untargeted attack on x_T: maximise the classifier's cross-entropy for its own label of the clean sample."""
    from ..oracle import detect_objects

    caps = eval_captions(seed, 1, n, model.config.image_size)
    tokens = text.encode(caps, model.config.caption_length)
    x_T = initial_noise((n, 3, model.config.image_size, model.config.image_size), EVAL_SEED_OFFSET + seed)
    ode = make_ode(model, tokens, num_steps, "rho")
    with torch.no_grad():
        x0 = generate(ode, x_T)
        label = classifier(x0.clamp(-1, 1))["colour"].argmax(1)

    def loss_fn(x0):
        return -torch.nn.functional.cross_entropy(classifier(x0.clamp(-1, 1))["colour"], label, reduction="sum")

    delta = torch.zeros_like(x_T)
    grad_route = ROUTES[route]
    for it in range(iters):
        g = grad_route(ode, x_T + delta, loss_fn)
        step = g.x_T / g.x_T.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * x_T.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        delta = _project(delta - lr * step, x_T, budget)
        if on_iter is not None:
            on_iter(it, float(g.loss), delta)
    with torch.no_grad():
        x_adv = generate(ode, x_T + delta)
        new = classifier(x_adv.clamp(-1, 1))["colour"].argmax(1)
    img0, img1 = to_image_space(x0), to_image_space(x_adv)
    d0, d1 = detect_objects(img0), detect_objects(img1)

    def oracle_colour(dets):
        found = [o for o in dets if o.well_formed]
        return max(found, key=lambda o: o.area).colour if found else -1

    oracle_changed = [oracle_colour(a) != oracle_colour(b) for a, b in zip(d0, d1)]
    rel = (delta.flatten(1).norm(dim=1) / x_T.flatten(1).norm(dim=1))
    return {"flipped": float((new != label).float().mean()), "oracle_colour_changed": sum(oracle_changed) / n,
            "rel_delta": float(rel.mean()), "images": (img0, img1), "labels": (label, new)}


def effect_examples(n: int = 8, seed: int = 0, image_size: int = 32):
    """One-object world images whose object sits in the left third (the "effect"), with their captions."""
    keep_imgs, keep_caps, s = [], [], 0
    while len(keep_caps) < n:
        b = make_shapes(64, 70_000 + 100 * seed + s, ShapesConfig(size=image_size), num_objects=1)
        for i in range(64):
            if float(b.centers[i, 0, 0]) < image_size / 3 - 1 and len(keep_caps) < n:
                keep_imgs.append(b.images[i])
                keep_caps.append(b.captions[i])
        s += 1
    return torch.stack(keep_imgs), keep_caps


def with_new_word(model, tokens: torch.Tensor, word: torch.Tensor) -> torch.Tensor:
    """The caption's embedding with the learned vector added at the first padding position (the "new word")."""
    c = model.text(tokens)
    pos = (tokens == text.PAD_ID).float().argmax(1)  # first padding slot
    onehot = torch.nn.functional.one_hot(pos, c.shape[1]).to(c.dtype)[:, :, None]
    return c + onehot * word[None, None, :]


def learn_effect_word(model, examples: torch.Tensor, captions: list[str], iters: int = 30, lr: float = 0.1,
                      num_steps: int = APP_STEPS, seed: int = 0, on_iter=None) -> tuple[torch.Tensor, list[float]]:
    """(b) The paper's embedding inversion: minimise Σ‖generate(x_T^i, c_i + word) − example_i‖² over the word, with the
    exact adjoint giving ∂L/∂c (then ∂L/∂word by the chain rule through :func:`with_new_word`)."""
    tokens = text.encode(captions, model.config.caption_length)
    n = len(captions)
    x_T = initial_noise((n, 3, model.config.image_size, model.config.image_size), 90_000 + seed)
    target = examples * 2 - 1
    uncond = null_embedding(model, n).detach()
    word = torch.zeros(model.config.text_dim, requires_grad=True)
    opt = torch.optim.Adam([word], lr=lr)
    losses = []
    for it in range(iters):
        with torch.enable_grad():
            c = with_new_word(model, tokens, word)
        c_leaf = c.detach().requires_grad_(True)
        ode = make_ode(model, c_leaf, num_steps, "rho", uncond)
        g = discrete_adjoint_gradients(ode, x_T, lambda x0: ((x0 - target) ** 2).mean(dim=(1, 2, 3)).sum(), [c_leaf])
        opt.zero_grad()
        with torch.enable_grad():
            (gw,) = torch.autograd.grad(c, word, g.params[0])
        word.grad = gw
        opt.step()
        losses.append(float(g.loss) / n)
        if on_iter is not None:
            on_iter(it, losses[-1])
    return word.detach(), losses


def _left_and_content(images: torch.Tensor, captions: list[str]) -> dict[str, float]:
    from ..oracle import caption_accuracy, detect_objects, realism

    dets = detect_objects(images)
    hits = [any(o.well_formed and o.centroid[0] < 1 / 3 for o in d) for d in dets]
    acc = caption_accuracy(captions, dets)
    return {"left_hit": sum(hits) / len(hits), "content": acc["exact"], "colour": acc["colour"], "shape": acc["shape"],
            "realism": float(realism(images).mean())}


def sample_with_word(model, word: torch.Tensor | None, seed: int, n: int = 24, num_steps: int = APP_STEPS) -> dict:
    caps = eval_captions(seed, 1, n, model.config.image_size)
    tokens = text.encode(caps, model.config.caption_length)
    x_T = initial_noise((n, 3, model.config.image_size, model.config.image_size), EVAL_SEED_OFFSET + 77 + seed)
    with torch.no_grad():
        if word is None:
            x0 = generate(make_ode(model, tokens, num_steps, "rho"), x_T)
        else:
            c = with_new_word(model, tokens, word)
            x0 = generate(make_ode(model, c, num_steps, "rho", null_embedding(model, n)), x_T)
    return _left_and_content(to_image_space(x0.clamp(-1, 1)), caps)


def stylize(model, iters: int = 20, lr: float = 3e-4, batch: int = 4, num_steps: int = APP_STEPS, seed: int = 0, on_iter=None):
    """(c) Fine-tune the denoiser's output layer (GroupNorm + conv + un-stem) against the Gram loss of one reference,
    ∂L/∂θ by the exact adjoint; returns the fine-tuned copy and the loss curve."""
    import copy

    tuned = copy.deepcopy(model)
    theta = [p for p in list(tuned.out.parameters()) + list(tuned.unstem.parameters())]
    for p in theta:
        p.requires_grad_(True)
    opt = torch.optim.Adam(theta, lr=lr)
    loss = style_loss()
    losses = []
    for it in range(iters):
        caps = make_shapes(batch, 80_000 + 1000 * seed + it, ShapesConfig(), num_objects=1).captions
        tokens = text.encode(caps, model.config.caption_length)
        x_T = initial_noise((batch, 3, model.config.image_size, model.config.image_size), 85_000 + 1000 * seed + it)
        ode = make_ode(tuned, tokens, num_steps, "rho")
        g = discrete_adjoint_gradients(ode, x_T, lambda x0: loss(x0).sum(), theta)
        opt.zero_grad()
        for p, gp in zip(theta, g.params):
            p.grad = gp / batch
        opt.step()
        losses.append(float(g.loss) / batch)
        if on_iter is not None:
            on_iter(it, losses[-1])
    for p in theta:
        p.requires_grad_(False)
    return tuned.eval(), losses


def style_outcome(model, seed: int, n: int = 24, num_steps: int = APP_STEPS) -> dict:
    caps = eval_captions(seed, 1, n, model.config.image_size)
    tokens = text.encode(caps, model.config.caption_length)
    x_T = initial_noise((n, 3, model.config.image_size, model.config.image_size), EVAL_SEED_OFFSET + 99 + seed)
    with torch.no_grad():
        x0 = generate(make_ode(model, tokens, num_steps, "rho"), x_T)
    out = _left_and_content(to_image_space(x0.clamp(-1, 1)), caps)
    out["gram_loss"] = float(style_loss()(x0.clamp(-1, 1)).mean())
    return out


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
        effect.append({"base_left_hit": base["left_hit"], "left_hit": learned["left_hit"], "base_content": base["content"],
                       "content": learned["content"], "mse_first": curve[0], "mse_last": curve[-1]})
        tuned, curve = stylize(model, seed=seed)
        b, s = style_outcome(model, seed), style_outcome(tuned, seed)
        style.append({"base_gram": b["gram_loss"], "gram": s["gram_loss"], "gram_ratio": s["gram_loss"] / b["gram_loss"],
                      "base_colour": b["colour"], "colour": s["colour"], "base_shape": b["shape"], "shape": s["shape"],
                      "content_kept": (s["colour"] + s["shape"]) / max(1e-9, b["colour"] + b["shape"])})
    return {
        "audit": {"rows": [{"setting": "x_T attack (budget 0.2, 10 iterations)", "metrics": summarise(audit)}], "seeds": list(seeds),
                  "samples_per_seed": 8, "setting_name": "(a) security audit", "target": "≥80% flipped with ‖Δx_T‖/‖x_T‖ ≤ 0.2"},
        "effect": {"rows": [{"setting": "new word from 8 examples (left third)", "metrics": summarise(effect)}], "seeds": list(seeds),
                   "samples_per_seed": 24, "setting_name": "(b) visual-effect inversion", "target": "effect in ≥70% of samples (vs base rate)"},
        "style": {"rows": [{"setting": "fine-tune output layers (20 steps)", "metrics": summarise(style)}], "seeds": list(seeds),
                  "samples_per_seed": 24, "setting_name": "(c) stylization", "target": "Gram loss halves, ≥90% of colour/shape content kept"},
    }


def evaluate_adjointdpm(model, seeds: list[int], progress: bool = True) -> dict:
    t0 = time.time()
    tables = {"fidelity": fidelity_table(model, seeds, progress=progress), "memory": memory_table(model),
              **applications(model, seeds, progress=progress)}
    tables["wall_time_s"] = round(time.time() - t0, 1)
    return tables


def cli_train(args) -> dict:
    raise SystemExit("AdjointDPM optimises at run time: nothing to train (its classifier: `python -m bytecourse train classifier`)")


def cli_eval(args) -> dict:
    from ..device import default_device
    from ..diffusion.primer import load_primer_model

    model, _ = load_primer_model(default_device(args.device))
    return evaluate_adjointdpm(model, list(args.seeds))


def stored_tables() -> dict | None:
    from .. import checkpoints

    entry = checkpoints.read_manifest().get("tables", {}).get(TABLE_KEY)
    return None if entry is None else entry["tables"]


# -------------------------------------------------------------------------------------------------- widget


def fidelity_preview(model, num_steps: int, method: str = "euler", coords: str = "rho", seed: int = 0) -> dict:
    """Pure function behind the widget: the three routes' ∂L/∂x_T for one sample at one setting, their agreement with
    autograd, and the peak bytes each holds for its backward pass."""
    if method not in ("euler", "heun") or coords not in ("rho", "t"):
        raise ValueError(f"method must be euler/heun and coords rho/t, got {method!r}, {coords!r}")
    caps = eval_captions(seed, 1, 1, model.config.image_size)
    tokens = text.encode(caps, model.config.caption_length)
    x_T = initial_noise((1, 3, model.config.image_size, model.config.image_size), EVAL_SEED_OFFSET + seed)
    loss = style_loss()
    loss_fn = lambda x0: loss(x0).sum()  # noqa: E731
    ode = make_ode(model, tokens, int(num_steps), coords)
    params = list(model.parameters())
    out, grads = {}, {}
    for name, route in (("continuous", continuous_adjoint_gradients), ("discrete", discrete_adjoint_gradients),
                        ("autograd", autograd_gradients)):
        with SavedTensorMeter(exclude=params) as meter:
            meter.hold(tensor_bytes(x_T) * {"continuous": 2, "discrete": int(num_steps) + 1, "autograd": 0}[name])
            t0 = time.time()
            g = route(ode, x_T, loss_fn, (), method)
        grads[name] = g
        out[name] = {"peak_bytes": meter.peak_bytes, "seconds": time.time() - t0}
    ref = grads["autograd"].x_T
    for name in ("continuous", "discrete"):
        out[name] |= {"rel_error": _rel(grads[name].x_T, ref), "cosine": _cos(grads[name].x_T, ref)}
    return {"num_steps": int(num_steps), "method": method, "coords": coords, "caption": caps[0], "routes": out,
            "x0": to_image_space(grads["autograd"].x_0.clamp(-1, 1)),
            "grads": {k: v.x_T for k, v in grads.items()}}


def render_fidelity(result: dict) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display

    r = result["routes"]
    print(f"N={result['num_steps']} · {result['method']} · {result['coords']}-coords → continuous adjoint: rel. error "
          f"{r['continuous']['rel_error']:.3g}, cosine {r['continuous']['cosine']:.3f}; discrete adjoint: rel. error "
          f"{r['discrete']['rel_error']:.1e}; peak MB held: continuous {r['continuous']['peak_bytes'] / 1e6:.2f}, discrete "
          f"{r['discrete']['peak_bytes'] / 1e6:.2f}, autograd {r['autograd']['peak_bytes'] / 1e6:.2f}")
    fig, axes = plt.subplots(1, 5, figsize=(12, 2.6))
    axes[0].imshow(result["x0"][0].permute(1, 2, 0).numpy())
    axes[0].set_title(f"x₀: “{result['caption']}”", fontsize=8)
    for ax, name in zip(axes[1:4], ("autograd", "discrete", "continuous")):
        g = result["grads"][name][0].abs().sum(0)
        ax.imshow(g.numpy(), cmap="magma")
        ax.set_title(f"|∂L/∂x_T| {name}", fontsize=8)
    for ax in axes[:4]:
        ax.axis("off")
    names = ["continuous", "discrete", "autograd"]
    axes[4].bar(names, [r[n]["peak_bytes"] / 1e6 for n in names], color=["#4c72b0", "#55a868", "#c44e52"])
    axes[4].set_ylabel("peak MB for backward")
    axes[4].tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    display(fig)
    plt.close(fig)


def adjoint_explorer(model):
    """The main widget of chapter 02: solver steps, solver and coordinates → gradient error and memory."""
    import ipywidgets as W

    from ..widgets import FunctionView

    controls = {
        "num_steps": W.SelectionSlider(options=[5, 10, 20, 50], value=10, description="ODE steps N", continuous_update=False),
        "method": W.ToggleButtons(options=["euler", "heun"], value="euler", description="solver"),
        "coords": W.ToggleButtons(options=["rho", "t"], value="rho", description="coordinates"),
        "seed": W.IntSlider(value=0, min=0, max=20, description="seed", continuous_update=False),
    }
    return FunctionView(controls, lambda **v: fidelity_preview(model, **v), render_fidelity,
                        title="Gradients through the sampler: continuous vs discrete adjoint vs autograd")
