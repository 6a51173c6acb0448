"""Chapter 00 exercises: self-checks (with tolerances) and reference solutions.

Each ``check_*`` takes the learner's function, compares it with the library on random inputs and returns
``(passed, max_abs_error)``; a function that raises ``NotImplementedError`` (the notebook's stub) is
reported as "not attempted" instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..diffusion.sampling import guided_eps
from ..diffusion.schedule import make_ddim_scheduler, make_train_scheduler
from ..exercises import attempt as _attempt
from ..exercises import report as _report


# Exercise 1 — the forward process q(x_t | x_0)
def check_add_noise(
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], tol: float = 1e-5
):
    """``fn(x0, noise, t, alphas_cumprod) → x_t``."""
    sched = make_train_scheduler()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 250, 500, 900, 999])
    got = _attempt("add_noise", fn, x0, noise, t, sched.alphas_cumprod)
    if got is None:
        return False, float("nan")
    return _report("add_noise", float((got - sched.add_noise(x0, noise, t)).abs().max()), tol)


def solution_add_noise(x0, noise, t, alphas_cumprod):
    """x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε (DDPM Eq. 4)."""
    a = alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


# Exercise 2 — one deterministic DDIM step
def check_ddim_step(fn: Callable[[torch.Tensor, torch.Tensor, float, float], torch.Tensor], tol: float = 1e-5):
    """``fn(x_t, eps, alpha_bar_t, alpha_bar_prev) → x_prev`` for η = 0."""
    sched = make_ddim_scheduler(make_train_scheduler(), 10, clip_x0=False)  # the pure DDIM update, no clipping
    stride = sched.config.num_train_timesteps // sched.num_inference_steps  # the level each step jumps to
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    errs = []
    for t in sched.timesteps.tolist():
        prev = t - stride
        a_prev = float(sched.alphas_cumprod[prev]) if prev >= 0 else 1.0
        got = _attempt("ddim_step", fn, x, eps, float(sched.alphas_cumprod[t]), a_prev)
        if got is None:
            return False, float("nan")
        errs.append(float((got - sched.step(eps, t, x, eta=0.0).prev_sample).abs().max()))
    return _report("ddim_step", max(errs), tol)


def solution_ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev):
    """x̂₀ = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t;  x_{t'} = √ᾱ_{t'} x̂₀ + √(1−ᾱ_{t'}) ε̂ (DDIM Eq. 12, σ = 0)."""
    x0 = (x_t - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t**0.5
    return alpha_bar_prev**0.5 * x0 + (1 - alpha_bar_prev) ** 0.5 * eps


# Exercise 3 — classifier-free guidance
def check_cfg(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], tol: float = 1e-5):
    """``fn(eps_cond, eps_uncond, w) → guided eps``, checked against :func:`guided_eps` on a toy model."""
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(3, 3, generator=g)

    def toy_model(x, t, tokens):  # ε depends on the caption so that guidance matters
        return torch.einsum("bchw,cd->bdhw", x, weight) * (1 + tokens.float().mean(1)).view(-1, 1, 1, 1)

    x = torch.randn(4, 3, 8, 8, generator=g)
    tokens = torch.randint(1, 10, (4, 12), generator=g)
    errs = []
    for w in (0.0, 1.0, 3.0, 7.5):
        eps_c = toy_model(x, None, tokens)
        eps_u = toy_model(x, None, torch.zeros_like(tokens))
        got = _attempt("cfg", fn, eps_c, eps_u, w)
        if got is None:
            return False, float("nan")
        errs.append(float((got - guided_eps(toy_model, x, 0, tokens, w)).abs().max()))
    return _report("cfg", max(errs), tol)


def solution_cfg(eps_cond, eps_uncond, w):
    """ε̂ = ε(∅) + w (ε(c) − ε(∅)) (Ho & Salimans 2022, Eq. 6)."""
    return eps_uncond + w * (eps_cond - eps_uncond)


# Exercise 4 — Tweedie's clean-image estimate and its error against the truth
def check_x0_estimate(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], tol: float = 1e-4):
    """``fn(x_t, eps, alpha_bar_t) → x̂₀``: with the *true* noise the estimate must recover x₀ exactly."""
    sched = make_train_scheduler()
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1, torch.randn(3, 3, 8, 8, generator=g)
    errs = []
    for t in (1, 300, 700, 980):
        xt = sched.add_noise(x0, noise, torch.tensor([t]))
        got = _attempt("x0_estimate", fn, xt, noise, float(sched.alphas_cumprod[t]))
        if got is None:
            return False, float("nan")
        errs.append(float((got - x0).abs().max()))
    return _report("x0_estimate", max(errs), tol)  # ÷√ᾱ_t amplifies float32 rounding at high t: 1e-4


def solution_x0_estimate(x_t, eps, alpha_bar_t):
    return (x_t - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t**0.5


EXERCISES = {
    "add_noise": (check_add_noise, solution_add_noise),
    "ddim_step": (check_ddim_step, solution_ddim_step),
    "cfg": (check_cfg, solution_cfg),
    "x0_estimate": (check_x0_estimate, solution_x0_estimate),
}
