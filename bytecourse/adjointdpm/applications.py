"""The paper's three applications at toy scale (§4), and the settings every chapter-02 experiment shares.

All generation here is the *unclipped* PF-ODE from ``T_MAX = 980`` to level 0 on a time-uniform grid with CFG 2.
Why not 999: the cosine schedule ends at ᾱ₉₉₉ ≈ 2.4·10⁻⁹, so ρ_T = σ/α ≈ 2·10⁴ and the first Euler step multiplies
every ε̂ error by that (samples blow up to |x| ~ 10³). At 980, ρ ≈ 34, x_T ~ N(0, I) is still within 3% of the
model's x_T distribution, and unclipped ODE samples are as good as the primer's clipped DDIM ones.

Mini-applications (the paper's §4 at toy scale; gradients by the exact discrete adjoint, see below):

(a) *security audit* — optimise x_T (‖Δx_T‖ ≤ 0.2‖x_T‖ per sample, projected) so that the frozen clean-image
    classifier changes its colour label on the generated image; the oracle says whether the colour really changed.
(b) *visual-effect inversion* — learn a new conditioning vector ("a new word": a learned context row added to the
    caption's embedding at its first padding position) from 8 example images that share an effect the captions never
    name: the object is drawn **large** (its radius in the world's top quarter). The objective is distribution-level
    (see :func:`learn_effect_word`); the oracle measures the effect and the content on fresh noise and captions.
(c) *stylization* — fine-tune the output layers of the denoiser against one reference's Gram loss; the oracle
    checks that colour and shape content survive. It misses its target, and :func:`style_floor` measures why: this
    Gram loss is dominated by the reference object's colour, so it cannot be halved without recolouring objects.

    Tried and not kept (issue 16; seed 0, 30 iterations of 4 samples, 10 Euler steps): a content term on the
    object's pixels (the frozen model's sample from the same noise and caption, masked by saturation, weight 10),
    with LoRA (rank 4) on the last two up-blocks or on the output layers, against style images the loss *can* see
    (grey stripes with no object: world objects drawn over them score 0.25 (bold stripes) or 0.41 (light ones) of
    plain world images). The Gram ratio stayed at 1.00 (LoRA, content kept 0.98) and 1.07 (output layers) at lr
    3·10⁻⁴; at 10⁻³ the loss rose (LoRA 5.3 → 7.7) or blew up (output layers). The gradient is right (a step of
    10⁻² along it lowers the loss 1.5%; 10⁻¹ raises it 25%): ten ODE steps amplify weight changes sharply, so drawing
    a new texture needs far more iterations than this budget.

Why the exact discrete adjoint for the applications: each application optimises the sampler it actually runs (10
Euler steps in ρ on the time grid), and the discrete adjoint is that sampler's exact gradient at the same flat memory.
The continuous adjoint on that grid is far from it (the fidelity table's Euler rows on the time grid); the audit is
also run with it (``route="continuous"``, a row of the audit table with its first gradient's error), so the paper's
route is tried on one application beside the exact one.
"""

from __future__ import annotations

import torch

from .. import text
from ..diffusion import guided_eps, initial_noise, make_train_scheduler, to_image_space
from ..diffusion.image_model import DEFAULT_GUIDANCE_SCALE, EVAL_SEED_OFFSET, eval_captions
from ..diffusion.losses import GramStyleLoss
from ..worlds import ShapesConfig, make_shapes
from .solvers import PFODE, ROUTES, discrete_adjoint_gradients, make_grid, solve_pf_ode, time_grid

CHECKPOINT = None  # AdjointDPM's applications optimise noise, embeddings and weights at run time: no shipped weights
TABLE_KEY = "adjointdpm"
T_MAX = 980
N_GRID = (5, 10, 20, 50)
APP_STEPS = 10  # ODE steps used by the applications
STYLE_REFERENCE_SEED = 5


def eps_for(model, cond, uncond=None, guidance_scale: float = DEFAULT_GUIDANCE_SCALE):
    """ε̂(x, t) with CFG for a caption's tokens or a conditioning embedding (then ``uncond`` is its null embedding)."""
    return lambda x, t: guided_eps(model, x, t, cond, guidance_scale, uncond)


def make_ode(model, cond, num_steps: int, coords: str = "rho", uncond=None, grid: str = "time") -> PFODE:
    """The chapter's PF-ODE from ``T_MAX`` to level 0 on a ``grid`` of ``num_steps`` steps (:func:`.make_grid`)."""
    acp = make_train_scheduler().alphas_cumprod
    return PFODE(eps_for(model, cond, uncond), acp, make_grid(num_steps, grid, T_MAX, 0, acp), coords)


def start_level_facts(num_steps: int = 10) -> dict[str, float]:
    """The schedule numbers behind ``T_MAX`` (for the notebook): ᾱ and ρ = σ/α at 999 and at T_MAX, the signal weight
    α at T_MAX, and the first ρ-step of a time-uniform grid."""
    acp = make_train_scheduler().alphas_cumprod.double()
    rho = lambda t: float(((1 - acp[t]) / acp[t]).sqrt())  # noqa: E731
    grid = time_grid(num_steps, T_MAX)
    return {
        "abar_999": float(acp[999]),
        "rho_999": rho(999),
        "abar_T": float(acp[T_MAX]),
        "rho_T": rho(T_MAX),
        "alpha_T": float(acp[T_MAX].sqrt()),
        "first_step_from": rho(grid[0]),
        "first_step_to": rho(grid[1]),
        "num_steps": num_steps,
    }


def null_embedding(model, batch: int) -> torch.Tensor:
    from ..text import PAD_ID

    return model.text(torch.full((batch, model.config.caption_length), PAD_ID, dtype=torch.long))


def style_loss() -> GramStyleLoss:
    b = make_shapes(1, STYLE_REFERENCE_SEED, ShapesConfig(textured=True), num_objects=1)
    return GramStyleLoss(b.images[0] * 2 - 1)


def _project(delta: torch.Tensor, x_T: torch.Tensor, budget: float) -> torch.Tensor:
    """Scale each sample's Δ so that ‖Δ‖ ≤ budget·‖x_T‖."""
    norms = delta.flatten(1).norm(dim=1)
    limit = budget * x_T.flatten(1).norm(dim=1)
    scale = torch.where(norms > limit, limit / norms.clamp_min(1e-12), torch.ones_like(norms))
    return delta * scale.view(-1, 1, 1, 1)


def audit_problem(
    model, classifier, seed: int, n: int = 8, num_steps: int = APP_STEPS, method: str = "euler", grid: str = "time"
):
    """The audit's sampler (``method`` on ``num_steps`` steps of ``grid``, ρ-coordinates), its noises x_T, clean
    samples x₀, the classifier's labels of them, and the attack's loss (the negative cross-entropy of those labels;
    summed over the batch)."""
    caps = eval_captions(seed, 1, n, model.config.image_size)
    tokens = text.encode(caps, model.config.caption_length)
    x_T = initial_noise((n, 3, model.config.image_size, model.config.image_size), EVAL_SEED_OFFSET + seed)
    ode = make_ode(model, tokens, num_steps, "rho", grid=grid)
    with torch.no_grad():
        x0 = solve_pf_ode(ode, x_T, method)
        label = classifier(x0.clamp(-1, 1))["colour"].argmax(1)

    def loss_fn(x0):
        return -torch.nn.functional.cross_entropy(classifier(x0.clamp(-1, 1))["colour"], label, reduction="sum")

    return ode, x_T, x0, label, loss_fn


#: the sampler the audit runs when the continuous adjoint drives it: where that route is accurate (the fidelity
#: table: Heun on the log-ρ grid), not the 10 Euler steps on the time grid, where its gradient is unrelated
CONTINUOUS_AUDIT = {"method": "heun", "grid": "log_rho", "num_steps": 20}


def audit_gradient_error(
    model, classifier, seed: int, n: int = 8, num_steps: int = APP_STEPS, method: str = "euler", grid: str = "time"
) -> dict:
    """How far the continuous adjoint's ∂L/∂x_T is from the exact gradient of the sampler the audit runs, at the
    attack's first iteration: relative error and cosine."""
    ode, x_T, _, _, loss_fn = audit_problem(model, classifier, seed, n, num_steps, method, grid)
    exact = discrete_adjoint_gradients(ode, x_T, loss_fn, (), method).grad_x
    cont = ROUTES["continuous"](ode, x_T, loss_fn, (), method).grad_x
    cos = torch.nn.functional.cosine_similarity(cont.flatten(), exact.flatten(), 0)
    return {"grad_rel_error": float((cont - exact).norm() / exact.norm()), "grad_cosine": float(cos)}


def security_audit(
    model,
    classifier,
    seed: int,
    n: int = 8,
    iters: int = 10,
    budget: float = 0.2,
    lr: float = 0.05,
    route: str = "discrete",
    num_steps: int = APP_STEPS,
    on_iter=None,
    method: str = "euler",
    grid: str = "time",
) -> dict:
    """(a) Untargeted attack on x_T: maximise the classifier's cross-entropy for its own label of the clean sample.
    ``route``: which gradient drives it (:data:`.solvers.ROUTES`); the sampler is ``method`` on ``num_steps`` steps
    of ``grid``."""
    from ..oracle import detect_objects

    ode, x_T, x0, label, loss_fn = audit_problem(model, classifier, seed, n, num_steps, method, grid)
    delta = torch.zeros_like(x_T)
    grad_route = ROUTES[route]
    for it in range(iters):
        g = grad_route(ode, x_T + delta, loss_fn, (), method)
        step = (
            g.grad_x
            / g.grad_x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            * x_T.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        )
        delta = _project(delta - lr * step, x_T, budget)
        if on_iter is not None:
            on_iter(it, float(g.loss), delta)
    with torch.no_grad():
        x_adv = solve_pf_ode(ode, x_T + delta, method)
        new = classifier(x_adv.clamp(-1, 1))["colour"].argmax(1)
    img0, img1 = to_image_space(x0), to_image_space(x_adv)
    d0, d1 = detect_objects(img0), detect_objects(img1)

    def oracle_colour(dets):
        found = [o for o in dets if o.well_formed]
        return max(found, key=lambda o: o.area).colour if found else -1

    oracle_changed = [oracle_colour(a) != oracle_colour(b) for a, b in zip(d0, d1)]
    rel = delta.flatten(1).norm(dim=1) / x_T.flatten(1).norm(dim=1)
    return {
        "flipped": float((new != label).float().mean()),
        "oracle_colour_changed": sum(oracle_changed) / n,
        "rel_delta": float(rel.mean()),
        "images": (img0, img1),
        "labels": (label, new),
    }


#: the effect (b) learns: the object's radius lies in the world's top quarter (``ShapesConfig.radius_range``)
EFFECT_QUANTILE = 0.75


def effect_side(config: ShapesConfig | None = None) -> float:
    """The smallest bounding-square side (fraction of the image) that shows the effect: 2·r* with r* the world's
    ``EFFECT_QUANTILE`` radius (the oracle's box side of a world object is 2r to within a pixel)."""
    lo, hi = (config or ShapesConfig()).radius_range
    return 2 * (lo + EFFECT_QUANTILE * (hi - lo))


def effect_examples(n: int = 8, seed: int = 0, image_size: int = 32):
    """One-object world images that show the effect (the object drawn large: radius ≥ r* and, by the oracle,
    :func:`effect_present`), with their captions."""
    from ..seeds import ADJOINTDPM_EFFECT

    config = ShapesConfig(size=image_size)
    r_min = effect_side(config) / 2 * image_size
    keep_imgs, keep_caps, s = [], [], 0
    while len(keep_caps) < n:
        b = make_shapes(64, ADJOINTDPM_EFFECT + 100 * seed + s, config, num_objects=1)
        seen = effect_present(b.images)  # the oracle's measure too (its box of a triangle runs ~⅓ px short)
        for i in range(64):
            if float(b.radii[i, 0]) >= r_min and seen[i] and len(keep_caps) < n:
                keep_imgs.append(b.images[i])
                keep_caps.append(b.captions[i])
        s += 1
    return torch.stack(keep_imgs), keep_caps


def _caption_classes(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The (colour, shape) class of each one-object caption (:func:`~bytecourse.text.parse_shapes_caption`)."""
    parsed = [text.parse_shapes_caption(c) for c in captions]
    if any(len(p) != 1 for p in parsed):
        raise ValueError(f"effect inversion needs one-object captions ('a red circle'), got {captions}")
    return torch.tensor([p[0][0] for p in parsed]), torch.tensor([p[0][1] for p in parsed])


def _caption_colour_area(images: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """The soft fraction of pixels within 0.3 (RGB distance) of the caption's palette colour; images in [0, 1]."""
    from ..worlds.render import PALETTE

    d = (images - PALETTE.to(images)[colours][:, :, None, None]).norm(dim=1)
    return torch.sigmoid((0.3 - d) / 0.05).mean((1, 2))


_AREA_PER_SIDE2: dict[int, torch.Tensor] = {}


def soft_side(x0: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """A differentiable size of the caption's object, as a bounding-square side (fraction of the image):
    √(area / k_shape), from the soft area of the caption's colour and the area/side² ratio k of its shape kind,
    measured once on world images. On world images it is the oracle's box side to ±0.01; on the model's samples to
    ±0.05 (correlation 0.85; colour bleeding and off-caption shapes). ``x0`` in model space [−1, 1]."""
    size = x0.shape[-1]
    if size not in _AREA_PER_SIDE2:
        w = make_shapes(512, 999, ShapesConfig(size=size), num_objects=1)
        area = _caption_colour_area(w.images, w.colours[:, 0])
        side2 = (2 * w.radii[:, 0] / size) ** 2
        kinds = w.shapes[:, 0]
        _AREA_PER_SIDE2[size] = torch.stack([(area[kinds == k] / side2[kinds == k]).mean() for k in range(3)])
    colours, kinds = (t.to(x0.device) for t in _caption_classes(captions))
    area = _caption_colour_area((x0.clamp(-1, 1) + 1) / 2, colours)
    return (area / _AREA_PER_SIDE2[size].to(area)[kinds]).clamp_min(1e-6).sqrt()


def effect_present(images: torch.Tensor) -> list[bool]:
    """The oracle's verdict per image in [0, 1]: its largest well-formed object's box side is ≥ :func:`effect_side`."""
    from ..oracle import detect_objects

    threshold = effect_side()
    out = []
    for objs in detect_objects(images):
        found = [o for o in objs if o.well_formed]
        out.append(bool(found) and max(max(o.box[2] - o.box[0], o.box[3] - o.box[1]) for o in found) >= threshold)
    return out


def with_new_word(model, tokens: torch.Tensor, word: torch.Tensor) -> torch.Tensor:
    """The caption's embedding with the learned vector added at the first padding position (the "new word")."""
    c = model.text(tokens)
    pos = (tokens == text.PAD_ID).float().argmax(1)  # first padding slot
    onehot = torch.nn.functional.one_hot(pos, c.shape[1]).to(c.dtype)[:, :, None]
    return c + onehot * word[None, None, :]


#: weight of the hinge on the size (the soft side is a fraction of the image, so its squared shortfall is small)
EFFECT_WEIGHT = 100.0
#: the content term's weight in :func:`learn_effect_word` (0: the effect alone)
CONTENT_WEIGHT = 1.0


def learn_effect_word(
    model,
    examples: torch.Tensor,
    captions: list[str],
    iters: int = 40,
    lr: float = 0.1,
    num_steps: int = APP_STEPS,
    seed: int = 0,
    on_iter=None,
    batch: int = 8,
    content_weight: float = CONTENT_WEIGHT,
    classifier=None,
) -> tuple[torch.Tensor, list[float]]:
    """(b) Learn the new word so that samples from **fresh noise** and fresh one-object captions show the examples'
    effect. ∂L/∂c by the exact discrete adjoint, then ∂L/∂word by the chain rule through :func:`with_new_word`.

    The objective, per iteration (batch of ``batch`` noises and captions, new ones every iteration):

        L = EFFECT_WEIGHT · Σᵢ max(0, s_min + 0.01 − s(x₀ⁱ))²  +  content_weight · Σᵢ CE(classifier(x₀ⁱ), caption i)

    s is :func:`soft_side`, s_min the smallest example's: every sample should be at least as large as every
    example (a one-sided, distribution-level target read off the examples; no sample is paired with an example).
    The content term (the frozen clean-image classifier's cross-entropy of the caption's colour and shape; skipped
    if ``content_weight`` is 0) keeps the caption's object while the word adds the effect.

    Why not the paper's MSE to the examples: each example would be paired with an unrelated random x_T, so the
    word fits the examples' mean image (measured: effect rate 0.06 against a base rate of 0.24 for the earlier
    "object in the left third" effect, content 0.31). Why not that effect: position has almost no pathway through
    the conditioning of a model whose captions never name it — optimising the *whole* 12-row context of each of 6
    samples moved the left-third rate 0.33 → 0.67 only by rewriting the context (‖Δc‖ 53 against ‖c‖ 63; content
    0.67 → 0.33), one free row per sample left it at 0.33. Size has one: one row per sample can fill the frame."""
    if classifier is None and content_weight > 0:
        from ..diffusion.classifier import get_classifier

        classifier = get_classifier()[0].eval().requires_grad_(False)
    size = model.config.image_size
    s_min = float(soft_side(examples * 2 - 1, captions).min())
    uncond = null_embedding(model, batch).detach()
    word = torch.zeros(model.config.text_dim, requires_grad=True)
    opt = torch.optim.Adam([word], lr=lr)
    losses = []
    for it in range(iters):
        caps = make_shapes(batch, 81_000 + 1000 * seed + it, ShapesConfig(size=size), num_objects=1).captions
        tokens = text.encode(caps, model.config.caption_length)
        colours, kinds = _caption_classes(caps)
        x_T = initial_noise((batch, 3, size, size), 86_000 + 1000 * seed + it)

        def loss_fn(x0, caps=caps, colours=colours, kinds=kinds):
            loss = EFFECT_WEIGHT * (torch.relu(s_min + 0.01 - soft_side(x0, caps)) ** 2).sum()
            if content_weight > 0:
                out = classifier(x0.clamp(-1, 1))
                ce = torch.nn.functional.cross_entropy
                loss = loss + content_weight * (
                    ce(out["colour"], colours.to(x0.device), reduction="sum")
                    + ce(out["shape"], kinds.to(x0.device), reduction="sum")
                )
            return loss

        with torch.enable_grad():
            c = with_new_word(model, tokens, word)
        c_leaf = c.detach().requires_grad_(True)
        ode = make_ode(model, c_leaf, num_steps, "rho", uncond)
        g = discrete_adjoint_gradients(ode, x_T, loss_fn, [c_leaf])
        opt.zero_grad()
        with torch.enable_grad():
            (gw,) = torch.autograd.grad(c, word, g.grad_params[0])
        word.grad = gw
        opt.step()
        losses.append(float(g.loss) / batch)
        if on_iter is not None:
            on_iter(it, losses[-1])
    return word.detach(), losses


def _effect_and_content(images: torch.Tensor, captions: list[str]) -> dict[str, float]:
    from ..oracle import caption_accuracy, detect_objects, realism

    dets = detect_objects(images)
    acc = caption_accuracy(captions, dets)
    effect = effect_present(images)
    return {
        "effect": sum(effect) / len(effect),
        "content": acc["exact"],
        "colour": acc["colour"],
        "shape": acc["shape"],
        "realism": float(realism(images).mean()),
    }


def sample_with_word(model, word: torch.Tensor | None, seed: int, n: int = 24, num_steps: int = APP_STEPS) -> dict:
    caps = eval_captions(seed, 1, n, model.config.image_size)
    tokens = text.encode(caps, model.config.caption_length)
    x_T = initial_noise((n, 3, model.config.image_size, model.config.image_size), EVAL_SEED_OFFSET + 77 + seed)
    with torch.no_grad():
        if word is None:
            x0 = solve_pf_ode(make_ode(model, tokens, num_steps, "rho"), x_T)
        else:
            c = with_new_word(model, tokens, word)
            x0 = solve_pf_ode(make_ode(model, c, num_steps, "rho", null_embedding(model, n)), x_T)
    return _effect_and_content(to_image_space(x0.clamp(-1, 1)), caps)


def stylize(
    model, iters: int = 20, lr: float = 3e-4, batch: int = 4, num_steps: int = APP_STEPS, seed: int = 0, on_iter=None
):
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
        for p, gp in zip(theta, g.grad_params):
            p.grad = gp / batch
        opt.step()
        losses.append(float(g.loss) / batch)
        if on_iter is not None:
            on_iter(it, losses[-1])
    for p in theta:
        p.requires_grad_(False)
    return tuned.eval(), losses


def style_floor(n: int = 256, seed: int = 4321) -> dict[str, float]:
    """What the style loss can reach without changing content (the suspect behind (c)'s miss): its mean on world
    images with the reference's texture (textured backgrounds, any objects) and on plain ones, and on textured world
    images whose object has the reference's colour against those of the other colours."""
    loss = style_loss()
    ref = make_shapes(1, STYLE_REFERENCE_SEED, ShapesConfig(textured=True), num_objects=1)
    tex = make_shapes(n, seed, ShapesConfig(textured=True), num_objects=1)
    plain = make_shapes(n, seed + 1, ShapesConfig(), num_objects=1)
    with torch.no_grad():
        lt, lp = loss(tex.images * 2 - 1), loss(plain.images * 2 - 1)
    same = tex.colours[:, 0] == ref.colours[0, 0]
    return {
        "textured_world": float(lt.mean()),
        "plain_world": float(lp.mean()),
        "textured_over_plain": float(lt.mean() / lp.mean()),
        "reference_colour": float(lt[same].mean()),
        "other_colours": float(lt[~same].mean()),
    }


def style_outcome(model, seed: int, n: int = 24, num_steps: int = APP_STEPS) -> dict:
    caps = eval_captions(seed, 1, n, model.config.image_size)
    tokens = text.encode(caps, model.config.caption_length)
    x_T = initial_noise((n, 3, model.config.image_size, model.config.image_size), EVAL_SEED_OFFSET + 99 + seed)
    with torch.no_grad():
        x0 = solve_pf_ode(make_ode(model, tokens, num_steps, "rho"), x_T)
    out = _effect_and_content(to_image_space(x0.clamp(-1, 1)), caps)
    out["gram_loss"] = float(style_loss()(x0.clamp(-1, 1)).mean())
    return out
