"""Samplers: DDIM (with classifier-free guidance and a per-step hook) and ancestral DDPM.

DDIM (Song et al. 2021, Eq. 12):
    x̂₀ = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t,
    x_{t'} = √ᾱ_{t'} x̂₀ + √(1−ᾱ_{t'} − σ²) ε̂ + σ z,   σ = η √((1−ᾱ_{t'})/(1−ᾱ_t)) √(1−ᾱ_t/ᾱ_{t'}).
Classifier-free guidance (Ho & Salimans 2022, Eq. 6): ε̂ = ε_θ(x, ∅) + w (ε_θ(x, c) − ε_θ(x, ∅)).

The hook is how later chapters act at every step without forking the loop: guidance (SAG, AdjointDPM)
replaces ε̂ or x_{t'}, Boximator overwrites the given first frame, MagicAnimate fuses windows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from tqdm.auto import tqdm

from ..text import PAD_ID, VOCAB_SIZE
from ..validation import _show, check_finite, check_float, check_int, check_tokens
from .schedule import NUM_TRAIN_TIMESTEPS, make_ddim_scheduler

EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepState:
    """What a hook sees at DDIM step ``index``: the update goes from level ``t`` (ᾱ = ``alpha_bar``) to level
    ``t_prev`` (ᾱ = ``alpha_bar_prev``; ``t_prev = -1`` means x₀, ᾱ = 1)."""

    index: int
    t: int
    t_prev: int
    x: torch.Tensor
    cond: torch.Tensor
    alpha_bar: float
    alpha_bar_prev: float
    eps: torch.Tensor | None = None
    x0_pred: torch.Tensor | None = None
    x_prev: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)


class SamplerHook:
    """Override any of the three; returning ``None`` leaves the value unchanged."""

    def on_step_start(self, state: StepState) -> torch.Tensor | None:
        """May replace x_t before the network is evaluated."""
        return None

    def on_eps(self, state: StepState) -> torch.Tensor | None:
        """May replace the (guided) ε̂ before the update."""
        return None

    def on_step_end(self, state: StepState) -> torch.Tensor | None:
        """May replace x_{t'} after the update."""
        return None


class RecordTrajectory(SamplerHook):
    """Keeps x_t and the clean estimate x̂₀ at every step (to watch a sample form)."""

    def __init__(self):
        self.timesteps: list[int] = []
        self.xs: list[torch.Tensor] = []
        self.x0_preds: list[torch.Tensor] = []

    def on_step_end(self, state: StepState) -> None:
        self.timesteps.append(state.t)
        self.xs.append(state.x.detach().cpu())
        self.x0_preds.append(state.x0_pred.detach().cpu())
        return None


def null_tokens_like(tokens: torch.Tensor) -> torch.Tensor:
    """The null caption (all padding) for CFG's unconditional branch; embeddings need an explicit ``uncond``."""
    if tokens.is_floating_point():
        raise ValueError(
            "the condition is an embedding: pass its null embedding as `uncond` (e.g. model.text(null tokens))"
        )
    return torch.full_like(tokens, PAD_ID)


def guided_eps(
    model: EpsModel,
    x: torch.Tensor,
    t: torch.Tensor | int,
    cond: torch.Tensor,
    guidance_scale: float,
    uncond: torch.Tensor | None = None,
) -> torch.Tensor:
    """ε̂ with classifier-free guidance; both branches in one batched call. ``guidance_scale = 1`` is the plain
    conditional model (one call), ``0`` the unconditional one."""
    t = torch.as_tensor(t, device=x.device)
    if t.numel() and (float(t.min()) < 0 or float(t.max()) > NUM_TRAIN_TIMESTEPS - 1):
        raise ValueError(f"t must be a timestep in [0, {NUM_TRAIN_TIMESTEPS - 1}], got {t.tolist()}")
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if guidance_scale == 1.0:
        return model(x, t, cond)
    uncond = null_tokens_like(cond) if uncond is None else uncond
    eps_c, eps_u = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond])).chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


def initial_noise(shape: tuple[int, ...], seed: int | torch.Generator, device=None) -> torch.Tensor:
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    return torch.randn(shape, generator=g).to(device)


def _validate(model: EpsModel, guidance_scale: float, eta: float, x: torch.Tensor, cond: torch.Tensor) -> None:
    check_float("guidance_scale", guidance_scale, 0.0, 50.0)
    check_float("eta", eta, 0.0, 1.0)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"noise must be a floating-point tensor, got {_show(x)}")
    check_finite("noise", x)
    params = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    if params is not None and params.is_floating_point() and x.dtype != params.dtype:
        raise ValueError(
            f"noise must have the model's dtype {params.dtype}, got {x.dtype} (use noise.to({params.dtype}))"
        )
    if not isinstance(cond, torch.Tensor) or cond.shape[0] != x.shape[0]:
        raise ValueError(f"cond must have one row per noise sample ({x.shape[0]}), got {_show(cond)}")
    if cond.is_floating_point():
        check_finite("cond", cond)
    else:
        check_tokens("cond", cond, VOCAB_SIZE)


def ddim_step(
    sched: DDIMScheduler,
    eps: torch.Tensor,
    t: int,
    x: torch.Tensor,
    eta: float = 0.0,
    variance_noise: torch.Tensor | None = None,
    use_clipped_model_output: bool = False,
):
    """One ``DDIMScheduler.step`` (the update x_t → x_{t'} of Song et al. 2021, Eq. 12), safe for η > 0.

    The direction term is √(1 − ᾱ_{t'} − σ²) ε̂ with σ² = η² (1−ᾱ_{t'})/(1−ᾱ_t) (1 − ᾱ_t/ᾱ_{t'}). At the first step
    of the cosine schedule ᾱ_t ≈ 2·10⁻⁹, and for η = 1 the float32 value of 1 − ᾱ_{t'} − σ² can round below zero,
    so diffusers returns NaN (measured: a 5-step η = 1 run). Only there η is lowered by the rounding margin, to the
    largest value whose σ² fits; every other step is diffusers' own, unchanged."""
    if eta > 0:
        prev = t - sched.config.num_train_timesteps // sched.num_inference_steps
        a_t = sched.alphas_cumprod[t]
        a_s = sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod
        var = (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
        if float(1 - a_s - (eta * var**0.5) ** 2) < 0:  # diffusers' own expression, as it will evaluate it
            eta = float(((1 - a_s) / var).sqrt()) * (1 - 1e-6)
    return sched.step(
        eps, t, x, eta=eta, variance_noise=variance_noise, use_clipped_model_output=use_clipped_model_output
    )


@torch.no_grad()
def ddim_sample(
    model: EpsModel,
    noise: torch.Tensor,
    cond: torch.Tensor,
    train_scheduler: DDPMScheduler,
    steps: int = 50,
    guidance_scale: float = 1.0,
    eta: float = 0.0,
    uncond: torch.Tensor | None = None,
    hook: SamplerHook | None = None,
    seed: int = 0,
    progress: bool = False,
    clip_x0: bool = True,
    use_clipped_model_output: bool = True,
    start: int | None = None,
) -> torch.Tensor:
    """Run DDIM from ``noise`` (x_T) with ``steps`` network evaluations (×2 with CFG) and return x₀.

    ``start`` (a timestep): run only the grid's levels t ≤ ``start``, so ``noise`` is x at the first of them,
    :func:`ddim_start_level` — SDEdit's partial trajectory (Meng et al. 2022, §3), e.g. chapter 06's matched noise
    prior. ``None`` runs the whole grid from T.

    The update is diffusers' ``DDIMScheduler.step``; ε-prediction models, any shape of x (images or videos).
    ``seed`` drives the fresh noise of η > 0; ``clip_x0`` see :func:`make_ddim_scheduler`.

    ``use_clipped_model_output`` (diffusers' name) recomputes ε̂ from the *clipped* x̂₀,
    ε̂' = (x_t − √ᾱ_t clip(x̂₀))/√(1−ᾱ_t), before the update, so that x_{t'} = √ᾱ_{t'} clip(x̂₀) + √(1−ᾱ_{t'}) ε̂'
    is the DDIM step of a consistent (x̂₀, ε̂) pair; it is the default (issue 15). With ``False`` (diffusers'
    default, and this sampler's until issue 15) the clipped x̂₀ is paired with the raw ε̂: under strong guidance
    ε̂ = ε_u + w(ε_c − ε_u) points far outside the data, clipping removes that from x̂₀ but not from the direction
    term, and each step re-injects it (issue 15: exact caption accuracy of the primer, 32 one-object captions,
    seed 0, DDIM 20 at w = 1 / 2 / 3 / 5: 0.84 / 0.88 / 0.41 / 0.03 with the raw ε̂ against 0.78 / 0.88 / 0.97 / 1.00
    with the recomputed one; more steps re-inject more — DDIM 50 at w 3: 0.03 against 1.00). DDPM's posterior mean
    uses the clipped x̂₀ and x_t only, so ``ddpm_sample`` never had the problem.
    """
    _validate(model, guidance_scale, eta, noise, cond)
    steps = check_int("steps", steps, 1, train_scheduler.config.num_train_timesteps)
    sched = make_ddim_scheduler(train_scheduler, steps, clip_x0)
    g = torch.Generator().manual_seed(int(seed))
    acp = sched.alphas_cumprod
    x = noise
    timesteps = ddim_levels(train_scheduler, steps, start)
    stride = sched.config.num_train_timesteps // sched.num_inference_steps
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="DDIM")):
        # the level DDIMScheduler.step actually jumps to (with "trailing" spacing it can differ by one from the
        # next grid timestep); −1 means the final ᾱ = 1
        t_prev = t - stride if t - stride >= 0 else -1
        state = StepState(i, t, t_prev, x, cond, float(acp[t]), float(acp[t_prev]) if t_prev >= 0 else 1.0)
        if hook is not None and (new := hook.on_step_start(state)) is not None:
            state.x = x = new
        eps = guided_eps(model, x, t, cond, guidance_scale, uncond)
        state.eps = eps
        if hook is not None and (new := hook.on_eps(state)) is not None:
            state.eps = eps = new
        var_noise = torch.randn(x.shape, generator=g).to(x.device, x.dtype) if eta > 0 else None
        out = ddim_step(sched, eps, t, x, eta, var_noise, use_clipped_model_output)
        state.x0_pred, state.x_prev = out.pred_original_sample, out.prev_sample
        x = out.prev_sample
        if hook is not None and (new := hook.on_step_end(state)) is not None:
            x = new
    return x


def ddim_levels(train_scheduler: DDPMScheduler, steps: int, start: int | None = None) -> list[int]:
    """The timesteps :func:`ddim_sample` visits with ``steps`` steps, noisiest first: the whole grid, or (``start``
    a timestep) only its levels t ≤ ``start`` — ValueError when none is."""
    steps = check_int("steps", steps, 1, train_scheduler.config.num_train_timesteps)
    timesteps = make_ddim_scheduler(train_scheduler, steps).timesteps.tolist()
    if start is None:
        return timesteps
    start = check_int("start", start, 0, train_scheduler.config.num_train_timesteps - 1)
    timesteps = [t for t in timesteps if t <= start]
    if not timesteps:
        raise ValueError(f"no DDIM level of {steps} steps lies at or below start={start}")
    return timesteps


def ddim_start_level(train_scheduler: DDPMScheduler, steps: int, signal: float) -> tuple[int, float]:
    """The noisiest level of the ``steps``-step DDIM grid whose ᾱ_t is at least ``signal`` ∈ [0, 1):
    ``(t, ᾱ_t)``. ``signal = 0`` gives the grid's first level (T). With x = √ᾱ_t·x₀' + √(1 − ᾱ_t)·ε and
    ``ddim_sample(..., start=t)`` a sampler starts where a guide x₀' is exactly as noisy as the model was trained
    to expect (SDEdit)."""
    signal = check_float("signal", signal, 0.0, 1.0)
    if signal >= 1.0:
        raise ValueError(f"signal must be below 1 (ᾱ = 1 leaves nothing to sample), got {signal}")
    steps = check_int("steps", steps, 1, train_scheduler.config.num_train_timesteps)
    sched = make_ddim_scheduler(train_scheduler, steps)
    acp = sched.alphas_cumprod
    for t in sched.timesteps.tolist():
        if float(acp[t]) >= signal:
            return int(t), float(acp[t])
    t = int(sched.timesteps[-1])
    return t, float(acp[t])


@torch.no_grad()
def ddpm_sample(
    model: EpsModel,
    noise: torch.Tensor,
    cond: torch.Tensor,
    train_scheduler: DDPMScheduler,
    guidance_scale: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    clip_x0: bool = True,
) -> torch.Tensor:
    """Ancestral DDPM sampling over all training timesteps (DDPM Alg. 2) with ``DDPMScheduler.step``
    (x̂₀ clipped to [−1, 1] as in Ho et al.'s sampler unless ``clip_x0=False``)."""
    _validate(model, guidance_scale, 0.0, noise, cond)
    sched = DDPMScheduler.from_config(train_scheduler.config, clip_sample=clip_x0, clip_sample_range=1.0)
    sched.set_timesteps(train_scheduler.config.num_train_timesteps)
    g = torch.Generator().manual_seed(int(seed))
    x = noise
    for t in tqdm(sched.timesteps.tolist(), disable=not progress, desc="DDPM"):
        eps = guided_eps(model, x, t, cond, guidance_scale)
        # a CPU generator: diffusers draws the noise on the CPU and moves it, so runs match across devices
        x = sched.step(eps, t, x, generator=g).prev_sample
    return x


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] → [−1, 1]."""
    return images * 2 - 1


def to_image_space(x: torch.Tensor) -> torch.Tensor:
    """[−1, 1] → [0, 1], clamped."""
    return ((x + 1) / 2).clamp(0, 1)


def diffusers_eps_model(unet) -> EpsModel:
    """Adapt a diffusers ``UNet2DConditionModel`` (ε-prediction) to our ``model(x, t, cond)`` signature, with
    ``cond`` its ``encoder_hidden_states`` ``(B, L, D)``; pass ``uncond`` (e.g. zeros) to the samplers."""

    def eps(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return unet(x, t, encoder_hidden_states=cond).sample

    return eps
