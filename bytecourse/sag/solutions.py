"""Chapter 01 exercises: self-checks (with tolerances) and reference solutions.

Each ``check_*`` takes the learner's function, compares it with the library (or with an exact reference) on
random inputs and returns ``(passed, error)``; a stub that raises ``NotImplementedError`` is reported as "not
attempted". The checks use a small smooth ε-function so they run in well under a second.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..diffusion.ode import VPLevels, autograd_grad, euler_step, solve
from ..diffusion.schedule import make_ddim_scheduler, make_train_scheduler
from ..exercises import attempt as _attempt
from ..exercises import report as _report
from .estimate import clean_estimate, clean_estimate_grid
from .guided import paper_step_size, time_travel


def smooth_eps(dtype=torch.float64) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """A fixed smooth nonlinear ε(x, t) on (B, 3, 4, 4) inputs (a stand-in for a UNet)."""
    g = torch.Generator().manual_seed(0)
    w1 = 0.3 * torch.randn(48, 49, generator=g, dtype=dtype)
    w2 = 0.3 * torch.randn(48, 48, generator=g, dtype=dtype)

    def eps(x: torch.Tensor, t: int) -> torch.Tensor:
        b = x.shape[0]
        h = torch.cat([x.reshape(b, -1), torch.full((b, 1), t / 1000.0, dtype=x.dtype)], 1)
        return (torch.tanh(h @ w1.T) @ w2.T / 6).reshape_as(x)

    return eps


# Exercise 1 — the one-step (Tweedie) clean estimate
def check_tweedie(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], tol: float = 1e-10):
    """``fn(x_t, eps, alpha_bar_t) → x̂₀``; compared with ``clean_estimate(n=1)``."""
    sched = make_train_scheduler()
    levels = VPLevels(sched.alphas_cumprod)
    ts = make_ddim_scheduler(sched, 20).timesteps.tolist()
    eps_fn = smooth_eps()
    x = torch.randn(4, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    errs = []
    for i in (0, 5, 10, 18):
        got = _attempt("tweedie", fn, x, eps_fn(x, ts[i]), sched.alphas_cumprod[ts[i]].double())
        if got is None:
            return False, float("nan")
        errs.append(float((got - clean_estimate(eps_fn, x, ts, i, 1, levels)).abs().max()))
    return _report("tweedie", max(errs), tol)


def solution_tweedie(x_t, eps, alpha_bar_t):
    """x̂₀ = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t."""
    return (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()


# Exercise 2 — the backward sweep of the symplectic adjoint
def check_adjoint_sweep(fn: Callable, tol: float = 1e-10):
    """``fn(eps_fn, states, grid, levels, lam_end) → ∂L/∂x₀`` given the forward states of the n-step map and
    λ_n = ∂L/∂x_n; compared with plain autograd through the same map (float64, relative error)."""
    sched = make_train_scheduler()
    levels = VPLevels(sched.alphas_cumprod)
    ts = make_ddim_scheduler(sched, 20).timesteps.tolist()
    eps_fn = smooth_eps()
    x = torch.randn(3, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    target = torch.randn(3, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    worst = 0.0
    for n in (1, 3, 8):
        grid = clean_estimate_grid(ts, 2, n)
        with torch.no_grad():
            states = solve(eps_fn, x, grid, levels, "data", keep_states=True)
        lam_end = 2 * (states[-1] - target)  # ∂/∂x_n of ‖x_n − target‖²
        got = _attempt("adjoint_sweep", fn, eps_fn, states, grid, levels, lam_end)
        if got is None:
            return False, float("nan")
        ref = autograd_grad(eps_fn, x, grid, levels, lambda z: ((z - target) ** 2).sum(), "data").grad_x
        worst = max(worst, float((got - ref).norm() / ref.norm()))
    return _report("adjoint_sweep (relative)", worst, tol)


def solution_adjoint_sweep(eps_fn, states, grid, levels, lam_end):
    """λ_m = (∂φ_m/∂x_m)ᵀ λ_{m+1}, m = n−1 … 0: recompute step m with a graph, take one VJP, drop the graph."""
    lam = lam_end
    for m in reversed(range(len(grid) - 1)):
        xm = states[m].detach().requires_grad_(True)
        with torch.enable_grad():
            out = euler_step(eps_fn, xm, grid[m], grid[m + 1], levels, "data")
            (lam,) = torch.autograd.grad(out, xm, lam)
    return lam


# Exercise 3 — the paper's step-size rule
def check_step_size(fn: Callable, tol: float = 1e-6):
    """``fn(e_c, e_u, g, guidance_scale, strength) → η (B,)``, per sample."""
    gen = torch.Generator().manual_seed(4)
    e_c, e_u = torch.randn(5, 3, 8, 8, generator=gen), torch.randn(5, 3, 8, 8, generator=gen)
    g = torch.randn(5, 3, 8, 8, generator=gen) * torch.logspace(-3, 2, 5).view(5, 1, 1, 1)
    got = _attempt("step_size", fn, e_c, e_u, g, 2.0, 1.5)
    if got is None:
        return False, float("nan")
    ref = paper_step_size(e_c, e_u, g, 2.0, 1.5)
    if got.shape != ref.shape:
        print(f"step_size: expected one η per sample, shape {tuple(ref.shape)}, got {tuple(got.shape)}")
        return False, float("inf")
    return _report("step_size (relative)", float(((got - ref) / ref).abs().max()), tol)


def solution_step_size(e_c, e_u, g, guidance_scale, strength):
    rms = lambda v: v.flatten(1).pow(2).mean(1).sqrt()  # noqa: E731
    return strength * 0.2 * guidance_scale * rms(e_c - e_u) / rms(g)


# Exercise 4 — time travel keeps the marginal right
def check_time_travel(fn: Callable, tol: float = 0.02):
    """``fn(x_prev, alpha_bar_t, alpha_bar_prev, z) → x_t``. Exact against the library, and statistically: if
    x_{t′} = √ᾱ_{t′} x₀ + √(1−ᾱ_{t′}) ε then the re-noised x_t has variance ᾱ_t var(x₀) + 1 − ᾱ_t."""
    gen = torch.Generator().manual_seed(5)
    a_t, a_p = torch.tensor(0.3), torch.tensor(0.6)
    x0 = 0.5 * torch.randn(200_000, generator=gen)
    x_prev = a_p.sqrt() * x0 + (1 - a_p).sqrt() * torch.randn(200_000, generator=gen)
    z = torch.randn(200_000, generator=gen)
    got = _attempt("time_travel", fn, x_prev, a_t, a_p, z)
    if got is None:
        return False, float("nan")
    exact = float((got - time_travel(x_prev, a_t, a_p, z)).abs().max())
    var_err = abs(float(got.var()) - float(a_t * 0.25 + 1 - a_t))
    print(f"time_travel: variance {float(got.var()):.4f} vs ᾱ_t·var(x₀) + 1 − ᾱ_t = {float(a_t * 0.25 + 1 - a_t):.4f}")
    return _report("time_travel", max(exact, var_err), tol)


def solution_time_travel(x_prev, alpha_bar_t, alpha_bar_prev, z):
    r = alpha_bar_t / alpha_bar_prev
    return r.sqrt() * x_prev + (1 - r).sqrt() * z


EXERCISES = {
    "tweedie": (check_tweedie, solution_tweedie),
    "adjoint_sweep": (check_adjoint_sweep, solution_adjoint_sweep),
    "step_size": (check_step_size, solution_step_size),
    "time_travel": (check_time_travel, solution_time_travel),
}
