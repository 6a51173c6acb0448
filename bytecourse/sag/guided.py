"""Training-free guided sampling: SAG (arXiv 2312.12030, §3 and Alg. 1) and its baselines.

One outer DDIM loop serves every method; they differ in how the guidance gradient is made and applied:

=====================  ====================================================================================
method                 at a guided step k (level t → t′), repeated ``repeats`` times (time travel)
=====================  ====================================================================================
``"sag"``              g = ∇_{x_t} L(x̂₀⁽ⁿ⁾(x_t)), x̂₀⁽ⁿ⁾ = n Euler steps of the PF-ODE (:mod:`.estimate`), the
                       gradient by the **symplectic adjoint** (exact, memory flat in n) or plain autograd;
                       x_{t′} ← DDIM(x_t) − η g  (taken at x_t, applied to x_{t′}: FreeDoM's rule, SAG §3.3)
FreeDoM                ``"sag"`` with n = 1 (the one-step Tweedie estimate); SAG reduces to it
``"ug"``               Universal Guidance (Bansal et al. 2023): *forward* guidance ε̂ ← ε̂ + c·g with
                       g = ∇_{x_t} L(x̂₀⁽¹⁾) (UG Eq. 6, scaled so x_{t′} moves as far as FreeDoM's step), then
                       *backward* guidance: Δ = argmin_Δ L(x̂₀ + Δ) by ``backward_steps`` gradient steps in
                       clean space, ε̂ ← ε̂ − (α_t/σ_t) Δ (UG Eq. 8–9); *self-recurrence* = ``repeats``
=====================  ====================================================================================

Time travel / self-recurrence (FreeDoM §3.3, UG §3.3, SAG Alg. 1): after a guided step, re-noise x_{t′} back to
level t, x_t = √(ᾱ_t/ᾱ_{t′}) x_{t′} + √(1 − ᾱ_t/ᾱ_{t′}) z, and take the step again; the last repeat is kept.

Step size, per sample (the official SAG code): η = strength · 0.2 · w · rms(ε_c − ε_u) / rms(g), i.e. the
guidance step is a fixed fraction of the CFG direction's size whatever the loss's scale; ``step_rule="plain"``
uses η = strength instead.

Guidance runs on a window of steps (the paper: steps 30–69 of 100, the middle 40%) — early steps have an
estimate too poor to guide, late steps cannot change the layout any more.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import torch
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from ..device import autocast
from ..diffusion.ode import VPLevels, autograd_grad, symplectic_adjoint_grad
from ..diffusion.sampling import EpsModel, ddim_step, null_tokens_like
from ..diffusion.schedule import make_ddim_scheduler
from .estimate import clean_estimate_grid

LossFn = Callable[[torch.Tensor], torch.Tensor]  # x̂₀ (B, …) → per-sample loss (B,)


@dataclass(frozen=True)
class GuidanceConfig:
    """How to guide. ``strength`` scales the step (×0.2·w·rms(CFG direction)/rms(g) under the paper's rule)."""

    method: Literal["sag", "ug"] = "sag"
    n: int = 4
    window: tuple[float, float] = (0.3, 0.7)
    repeats: int = 2
    step_rule: Literal["paper", "plain"] = "paper"
    strength: float = 1.0
    gradient: Literal["adjoint", "autograd"] = "adjoint"
    form: Literal["data", "noise"] = "data"
    backward_steps: int = 0
    backward_lr: float = 0.05

    def validate(self) -> None:
        if self.method not in ("sag", "ug"):
            raise ValueError(f"method must be 'sag' or 'ug', got {self.method!r}")
        if not 1 <= self.n <= 64:
            raise ValueError(f"n (network evaluations per clean estimate) must be in [1, 64], got {self.n}")
        lo, hi = self.window
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"window must be fractions 0 ≤ start ≤ end ≤ 1 of the sampler steps, got {self.window}")
        if not 1 <= self.repeats <= 10:
            raise ValueError(f"repeats must be in [1, 10], got {self.repeats}")
        if self.step_rule not in ("paper", "plain"):
            raise ValueError(f"step_rule must be 'paper' or 'plain', got {self.step_rule!r}")
        if not (self.strength >= 0 and self.strength == self.strength and self.strength != float("inf")):
            raise ValueError(f"strength must be a finite number ≥ 0, got {self.strength}")
        if self.gradient not in ("adjoint", "autograd"):
            raise ValueError(f"gradient must be 'adjoint' or 'autograd', got {self.gradient!r}")
        if self.method == "ug" and self.n != 1:
            raise ValueError("Universal Guidance uses the one-step estimate: n must be 1")
        if self.backward_steps < 0:
            raise ValueError(f"backward_steps must be ≥ 0, got {self.backward_steps}")

    def to_dict(self) -> dict:
        return asdict(self)


def sag(n: int = 4, **kw) -> GuidanceConfig:
    return GuidanceConfig(method="sag", n=n, **kw)


def freedom(**kw) -> GuidanceConfig:
    """FreeDoM = the one-step estimate + time travel (SAG with n = 1)."""
    return GuidanceConfig(method="sag", n=1, **kw)


def universal_guidance(backward_steps: int = 5, **kw) -> GuidanceConfig:
    return GuidanceConfig(method="ug", n=1, backward_steps=backward_steps, **kw)


def guided_indices(steps: int, window: tuple[float, float]) -> list[int]:
    """Sampler step indices k with window[0]·K ≤ k < window[1]·K."""
    lo, hi = round(window[0] * steps), round(window[1] * steps)
    return list(range(lo, hi))


class CountingModel:
    """Wraps an ε-model; counts rows through the network (forward evaluations) and rows of vector–Jacobian
    products taken through it. ``per_sample(batch)`` turns them into network evaluations per sample."""

    def __init__(self, model: EpsModel):
        self.model = model
        self.forward_rows = 0
        self.vjp_rows = 0

    def __call__(self, x, t, cond):
        out = self.model(x, t, cond)
        self.forward_rows += x.shape[0]
        if out.requires_grad:
            rows = x.shape[0]

            def count(grad):
                self.vjp_rows += rows

            out.register_hook(count)
        return out

    def per_sample(self, batch: int) -> dict[str, float]:
        return {"nfe": self.forward_rows / batch, "vjp": self.vjp_rows / batch}


@dataclass
class GuidedResult:
    x0: torch.Tensor  # final sample, model space
    loss: torch.Tensor  # per-sample guidance loss of the final sample
    nfe: float  # network forward evaluations per sample (a CFG pair counts 2; the adjoint's recomputes count)
    vjp: float  # vector–Jacobian products through the network per sample
    seconds: float
    trace: list[dict] = field(default_factory=list)  # per guided step: index, t, mean loss of x̂₀⁽ⁿ⁾, mean η


def _rms(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).pow(2).mean(1).sqrt()


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def paper_step_size(
    e_c: torch.Tensor, e_u: torch.Tensor, g: torch.Tensor, guidance_scale: float, strength: float = 1.0
) -> torch.Tensor:
    """SAG's normalised step, per sample: η = strength · 0.2 · w · rms(ε_c − ε_u) / rms(g)  → shape ``(B,)``."""
    return strength * 0.2 * guidance_scale * _rms(e_c - e_u) / _rms(g).clamp_min(1e-12)


def time_travel(
    x_prev: torch.Tensor, alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """Re-noise x_{t′} back to level t: √(ᾱ_t/ᾱ_{t′}) x_{t′} + √(1 − ᾱ_t/ᾱ_{t′}) z (the forward process from t′
    to t)."""
    ratio = alpha_bar_t / alpha_bar_prev
    return ratio.sqrt() * x_prev + (1 - ratio).sqrt() * z


def guidance_gradient(
    eps_fn: Callable[[torch.Tensor, int], torch.Tensor],
    x: torch.Tensor,
    grid: list[int],
    levels: VPLevels,
    loss_fn: LossFn,
    config: GuidanceConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample loss of x̂₀⁽ⁿ⁾(x), ∇_x Σ loss) by the symplectic adjoint or plain autograd through the n-step map."""
    per_sample: list[torch.Tensor] = []

    def total(x0):
        losses = loss_fn(x0)
        per_sample.append(losses.detach())
        return losses.sum()

    route = symplectic_adjoint_grad if config.gradient == "adjoint" else autograd_grad
    grad = route(eps_fn, x, grid, levels, total, config.form).grad_x
    return per_sample[-1], grad


def guided_sample(
    model: EpsModel,
    noise: torch.Tensor,
    cond: torch.Tensor,
    train_scheduler: DDPMScheduler,
    loss_fn: LossFn,
    config: GuidanceConfig = GuidanceConfig(),
    *,
    steps: int = 20,
    guidance_scale: float = 2.0,
    uncond: torch.Tensor | None = None,
    seed: int = 0,
    clip_x0: bool = True,
    use_clipped_model_output: bool = True,
    progress: bool = False,
) -> GuidedResult:
    """DDIM (η = 0) with CFG and training-free guidance by ``loss_fn`` on a clean estimate (see the module doc).

    ``model(x, t, cond)`` is any ε-prediction network (our denoisers, or a diffusers ``UNet2DConditionModel``
    through :func:`bytecourse.diffusion.sampling.diffusers_eps_model`); ``uncond`` is the null condition (our
    token captions default to the all-padding caption). ``seed`` drives the time-travel noise.
    ``use_clipped_model_output``: each outer DDIM step pairs the clipped x̂₀ with the ε̂ recomputed from it, the
    substrate sampler's cure for the guidance collapse (issue 15, :func:`bytecourse.diffusion.sampling.ddim_sample`);
    the guidance update −η g is added after the step either way.
    """
    config.validate()
    if guidance_scale <= 0:
        raise ValueError(
            f"guidance_scale must be > 0 (the step-size rule uses the CFG direction), got {guidance_scale}"
        )
    if cond.shape[0] != noise.shape[0]:
        raise ValueError(f"cond has batch {cond.shape[0]} but the noise has batch {noise.shape[0]}")
    uncond = null_tokens_like(cond) if uncond is None else uncond
    counter = CountingModel(model)
    sched = make_ddim_scheduler(train_scheduler, steps, clip_x0)
    levels = VPLevels(train_scheduler.alphas_cumprod)
    acp = train_scheduler.alphas_cumprod
    timesteps = sched.timesteps.tolist()
    stride = sched.config.num_train_timesteps // sched.num_inference_steps
    guided = set(guided_indices(steps, config.window))
    gen = torch.Generator().manual_seed(int(seed) + 1)
    b = noise.shape[0]

    def ddim(eps, t, x):
        return ddim_step(sched, eps, t, x, use_clipped_model_output=use_clipped_model_output).prev_sample

    def eps_pair(x, t):
        t_in = torch.full((x.shape[0],), int(t), device=x.device)
        with autocast(x.device):  # bf16 on CUDA, a no-op elsewhere; the solver's arithmetic stays in x's dtype
            out = counter(torch.cat([x, x]), torch.cat([t_in, t_in]), torch.cat([cond, uncond]))
        e_c, e_u = out.to(x.dtype).chunk(2)
        return e_c, e_u

    def eps_fn(x, t):  # CFG ε̂ inside the clean estimate, as the paper's inner solve
        e_c, e_u = eps_pair(x, t)
        return e_u + guidance_scale * (e_c - e_u)

    def step_size(e_c, e_u, g):
        if config.step_rule == "plain":
            return torch.full((b,), config.strength, device=g.device, dtype=g.dtype)
        return paper_step_size(e_c, e_u, g, guidance_scale, config.strength)

    trace: list[dict] = []
    t0 = time.time()
    x = noise
    for k, t in enumerate(tqdm(timesteps, disable=not progress, desc=f"guided {config.method} n={config.n}")):
        t_prev = t - stride if t - stride >= 0 else -1
        a_t = acp[t].to(x.device, x.dtype)
        a_p = acp[t_prev].to(x.device, x.dtype) if t_prev >= 0 else torch.ones((), device=x.device, dtype=x.dtype)
        repeats = config.repeats if k in guided else 1
        for j in range(repeats):
            with torch.no_grad():
                e_c, e_u = eps_pair(x, t)
            # ε̂ = ε(∅) + w (ε(c) − ε(∅))   (CFG)
            eps = e_u + guidance_scale * (e_c - e_u)
            if k in guided and config.strength > 0:
                # g = ∇_{x_t} L(x̂₀⁽ⁿ⁾(x_t)): n Euler steps from t to 0, gradient by the symplectic adjoint
                # (SAG §3.2–3.3)
                grid = clean_estimate_grid(timesteps, k, config.n)
                losses, g = guidance_gradient(eps_fn, x, grid, levels, loss_fn, config)
                # η_t = strength, or strength · 0.2 · w · rms(ε(c) − ε(∅)) / rms(g)  (paper_step_size)
                eta = step_size(e_c, e_u, g)
                trace.append({"index": k, "t": t, "repeat": j, "loss": float(losses.mean()), "eta": float(eta.mean())})
                if config.method == "ug":
                    eps = _universal_guidance_eps(eps, x, g, eta, a_t, a_p, loss_fn, config)
                    x_prev = ddim(eps, t, x)
                else:
                    # x_{t−1} = DDIM(x_t, ε̂) − η_t g   (FreeDoM / SAG update)
                    x_prev = ddim(eps, t, x) - _bcast(eta, x) * g
            else:
                x_prev = ddim(eps, t, x)
            if j < repeats - 1:
                # time travel: x_t = √(ᾱ_t/ᾱ_{t−1}) x_{t−1} + √(1 − ᾱ_t/ᾱ_{t−1}) z,  z ~ N(0, I)
                z = torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
                x = time_travel(x_prev, a_t, a_p, z)
        x = x_prev.detach()
    with torch.no_grad():
        final_loss = loss_fn(x.clamp(-1, 1)).detach()
    stats = counter.per_sample(b)
    return GuidedResult(x, final_loss, stats["nfe"], stats["vjp"], time.time() - t0, trace)


def _universal_guidance_eps(eps, x, g, eta, a_t, a_p, loss_fn, config) -> torch.Tensor:
    """UG forward + backward guidance on ε̂ (UG Eqs. 6, 8–9)."""
    s_t, al_t = (1 - a_t).sqrt(), a_t.sqrt()
    s_p, al_p = (1 - a_p).sqrt(), a_p.sqrt()
    # forward: ε̂ + c·g with c chosen so that the DDIM step moves x_{t′} by −η g, like FreeDoM's update:
    # Δx_{t′} = (σ_{t′} − α_{t′} σ_t / α_t) Δε̂
    coef = al_p * s_t / al_t - s_p
    eps = eps + _bcast(eta, x) * g / coef
    if config.backward_steps > 0:
        x0 = ((x - s_t * eps) / al_t).detach()
        delta = torch.zeros_like(x0)
        for _ in range(config.backward_steps):
            d = delta.requires_grad_(True)
            with torch.enable_grad():
                (gd,) = torch.autograd.grad(loss_fn(x0 + d).sum(), d)
            # normalised gradient descent in clean space (per sample), step backward_lr in pixel rms units
            delta = (d - config.backward_lr * gd / _bcast(_rms(gd).clamp_min(1e-12), gd)).detach()
        eps = eps - (al_t / s_t) * delta
    return eps


def unguided_sample(
    model: EpsModel,
    noise,
    cond,
    train_scheduler,
    loss_fn: LossFn,
    *,
    steps: int = 20,
    guidance_scale: float = 2.0,
    uncond=None,
    seed: int = 0,
    clip_x0: bool = True,
    use_clipped_model_output: bool = True,
) -> GuidedResult:
    """The same sampler with guidance off (strength 0): the reference row of every table."""
    return guided_sample(
        model,
        noise,
        cond,
        train_scheduler,
        loss_fn,
        replace(GuidanceConfig(), window=(0.0, 0.0)),
        steps=steps,
        guidance_scale=guidance_scale,
        uncond=uncond,
        seed=seed,
        clip_x0=clip_x0,
        use_clipped_model_output=use_clipped_model_output,
    )


__all__ = [
    "CountingModel",
    "GuidanceConfig",
    "GuidedResult",
    "freedom",
    "guidance_gradient",
    "guided_indices",
    "guided_sample",
    "paper_step_size",
    "sag",
    "time_travel",
    "universal_guidance",
    "unguided_sample",
]
