"""Chapter 02 exercises: self-checks (with tolerances) and reference solutions."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..diffusion.schedule import make_train_scheduler
from ..exercises import attempt, report
from .applications import _project
from .solvers import PFODE, ode_step, time_grid


def _toy_ode(coords: str = "rho") -> PFODE:
    g = torch.Generator().manual_seed(0)
    w = 0.3 * torch.randn(12, 12, generator=g, dtype=torch.float64)
    eps = lambda x, t: torch.tanh(x.reshape(x.shape[0], -1) @ w.T).reshape_as(x) * (1 + t / 1000)  # noqa: E731
    return PFODE(eps, make_train_scheduler().alphas_cumprod, time_grid(6, 980), coords)


# Exercise 1 — one Heun step
def check_heun_step(fn: Callable, tol: float = 1e-12):
    """``fn(F, y, s_m, s_next, m) → y_next`` where ``F(y, m)`` is the ODE's right-hand side at grid level m."""
    worst = 0.0
    for coords in ("rho", "t"):
        ode = _toy_ode(coords)
        y = torch.randn(3, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        for m in range(ode.num_steps):
            got = attempt("heun_step", fn, ode.F, y, ode.s(m), ode.s(m + 1), m)
            if got is None:
                return False, float("nan")
            worst = max(worst, float((got - ode_step(ode, y, m, "heun")).abs().max()))
    return report("heun_step", worst, tol)


def solution_heun_step(F, y, s_m, s_next, m):
    """Explicit trapezoid: k₁ = F(y, m), k₂ = F(y + h k₁, m+1), y + h/2 (k₁ + k₂), h = s_next − s_m."""
    h = s_next - s_m
    k1 = F(y, m)
    k2 = F(y + h * k1, m + 1)
    return y + 0.5 * h * (k1 + k2)


# Exercise 2 — from ∂L/∂y_T back to ∂L/∂x_T
def check_grad_to_x(fn: Callable, tol: float = 1e-12):
    """``fn(a_T, alpha_T) → ∂L/∂x_T`` given a_T = ∂L/∂y_T in ρ-coordinates (y = x/α)."""
    a = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    alpha = torch.tensor(0.0296, dtype=torch.float64)
    got = attempt("grad_to_x", fn, a, alpha)
    if got is None:
        return False, float("nan")
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    with torch.enable_grad():
        (ref,) = torch.autograd.grad((x / alpha * a).sum(), x)  # L linear in y with ∂L/∂y = a
    return report("grad_to_x", float((got - ref).abs().max()), tol)


def solution_grad_to_x(a_T, alpha_T):
    """y_T = x_T/α_T, so ∂L/∂x_T = ∂L/∂y_T · ∂y_T/∂x_T = a_T/α_T."""
    return a_T / alpha_T


# Exercise 3 — keep the attack within its budget
def check_project(fn: Callable, tol: float = 1e-6):
    """``fn(delta, x_T, budget) → delta'`` with ‖delta'_i‖ ≤ budget·‖x_T,i‖, unchanged when already inside."""
    g = torch.Generator().manual_seed(3)
    x_T = torch.randn(5, 3, 4, 4, generator=g)
    delta = torch.randn(5, 3, 4, 4, generator=g) * torch.tensor([0.01, 0.1, 1.0, 3.0, 10.0]).view(5, 1, 1, 1)
    got = attempt("project", fn, delta, x_T, 0.2)
    if got is None:
        return False, float("nan")
    return report("project", float((got - _project(delta, x_T, 0.2)).abs().max()), tol)


def solution_project(delta, x_T, budget):
    norms = delta.flatten(1).norm(dim=1)
    limit = budget * x_T.flatten(1).norm(dim=1)
    return delta * torch.clamp(limit / norms, max=1.0).view(-1, 1, 1, 1)


EXERCISES = {
    "heun_step": (check_heun_step, solution_heun_step),
    "grad_to_x": (check_grad_to_x, solution_grad_to_x),
    "project": (check_project, solution_project),
}
