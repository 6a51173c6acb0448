"""AdjointDPM (Pan et al., arXiv 2307.10711, §3): the probability-flow ODE, and gradients through its solution by the
augmented adjoint ODE solved backwards.

**Two coordinate systems for the same ODE** (VP diffusion, x_t = α_t x₀ + σ_t ε):

- ``"t"`` — the raw PF-ODE in x and the timestep (Song et al. 2021, Eq. 13):
  dx/dt = f(t) x + g²(t)/(2σ_t) ε_θ = −½ β(t) (x − ε_θ(x, t)/σ_t),  with β(t) = −d log ᾱ/dt.
  Stiff: β grows without bound near T (the cosine schedule caps it at 0.999 per step) and ε/σ blows up near 0.
- ``"rho"`` — the paper's exponential-integrator reparameterisation (§3.2, the noise form of DPM-Solver):
  y = x/α, ρ = σ/α:  dy/dρ = ε_θ(α(ρ) y, t(ρ)).  No linear term left, nothing stiff; one Euler step is one DDIM step.

Solvers: Euler, and Heun (explicit trapezoid, 2nd order). Both evaluate the network only at grid levels, so the
grid is a decreasing list of integer timesteps ("time-uniform", as the official code's ``linspace(0, 999, N)``).

**Three gradient routes** for a loss L(x₀) w.r.t. the initial noise x_T, a conditioning embedding c and weights θ:

1. the **continuous adjoint** (the paper's; torchdiffeq's ``odeint_adjoint``): from the *end state* y(s_N), solve
   the augmented system backwards with the same solver on the reversed grid
       dy/ds = F(y, s),   da/ds = −aᵀ ∂F/∂y,   da_c/ds = −aᵀ ∂F/∂c,   da_θ/ds = −aᵀ ∂F/∂θ,
   a(s_N) = ∂L/∂y(s_N), a_c = a_θ = 0; then ∂L/∂x_T = a(s_0)/α_T (ρ) or a(s_0) (t), ∂L/∂c = a_c(s_0), ∂L/∂θ = a_θ(s_0).
   y is re-integrated backwards, so the gradient is only as accurate as the solver: O(hᵖ), not exact.
2. the **discrete (symplectic) adjoint** — the substrate's :func:`~bytecourse.diffusion.ode.discrete_adjoint`:
   exact for the discretised map, N+1 states + one step's graph.
3. plain **autograd** through the solver: exact, N steps' graphs alive at once.

Memory of 1 and 2 is flat in N (one step's graph at a time); 3 grows linearly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..diffusion.ode import Gradients, VPLevels, autograd_through, check_grid, continuous_adjoint, discrete_adjoint

Coords = Literal["rho", "t"]
Method = Literal["euler", "heun"]
EpsFn = Callable[[torch.Tensor, int], torch.Tensor]  # ε̂(x, t) with condition, CFG and weights bound by closure


def time_grid(num_steps: int, t_max: int = 999, t_min: int = 0) -> list[int]:
    """``num_steps + 1`` distinct integer levels from ``t_max`` down to ``t_min``, uniform in t."""
    if not 1 <= num_steps <= t_max - t_min:
        raise ValueError(f"num_steps must be in [1, {t_max - t_min}], got {num_steps}")
    grid = torch.linspace(t_max, t_min, num_steps + 1).round().long().tolist()
    return [int(t) for t in grid]


@dataclass
class PFODE:
    """The PF-ODE of a VP model in ``coords``: ``F(y, m)`` at grid level m, and the x ↔ y maps at the ends."""

    eps_fn: EpsFn
    alphas_cumprod: torch.Tensor
    grid: Sequence[int]
    coords: Coords = "rho"

    def __post_init__(self):
        if self.coords not in ("rho", "t"):
            raise ValueError(f"coords must be 'rho' or 't', got {self.coords!r}")
        self.grid = check_grid(self.grid, clean_end=False, num_levels=len(self.alphas_cumprod))
        self.levels = VPLevels(self.alphas_cumprod)
        acp = self.alphas_cumprod.to(torch.float64)
        self._abar = acp
        # β(t) = −d log ᾱ/dt, by the centred difference of the discrete table (one-sided at the ends)
        logs = acp.log()
        d = torch.empty_like(logs)
        d[1:-1] = (logs[2:] - logs[:-2]) / 2
        d[0], d[-1] = logs[1] - logs[0], logs[-1] - logs[-2]
        self._beta = -d

    def alpha_sigma(self, m: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """α, σ at grid level m (the substrate's :class:`~bytecourse.diffusion.ode.VPLevels`)."""
        return self.levels.alpha_sigma(self.grid[m], dtype)

    def s(self, m: int) -> float:
        """The integration variable at level m: ρ = σ/α, or t."""
        if self.coords == "t":
            return float(self.grid[m])
        a = float(self._abar[self.grid[m]])
        return ((1 - a) / a) ** 0.5

    def F(self, y: torch.Tensor, m: int) -> torch.Tensor:
        t = self.grid[m]
        alpha, sigma = self.alpha_sigma(m, y.dtype)
        if self.coords == "rho":
            return self.eps_fn(alpha * y, t)
        beta = self._beta[t].to(y.dtype)
        return -0.5 * beta * (y - self.eps_fn(y, t) / sigma)

    def to_y(self, x_T: torch.Tensor) -> torch.Tensor:
        return x_T / self.alpha_sigma(0, x_T.dtype)[0] if self.coords == "rho" else x_T

    def to_x(self, y_end: torch.Tensor) -> torch.Tensor:
        return y_end * self.alpha_sigma(len(self.grid) - 1, y_end.dtype)[0] if self.coords == "rho" else y_end

    @property
    def num_steps(self) -> int:
        return len(self.grid) - 1


def ode_step(ode: PFODE, y: torch.Tensor, m: int, method: Method = "euler") -> torch.Tensor:
    """One step from level m to m+1 (h = s_{m+1} − s_m; negative in both coordinates: towards the data)."""
    h = ode.s(m + 1) - ode.s(m)
    k1 = ode.F(y, m)
    if method == "euler":
        return y + h * k1
    if method == "heun":
        k2 = ode.F(y + h * k1, m + 1)
        return y + 0.5 * h * (k1 + k2)
    raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")


def solve_pf_ode(ode: PFODE, x_T: torch.Tensor, method: Method = "euler") -> torch.Tensor:
    """x₀ ≈ the PF-ODE's solution from x_T over the grid."""
    y = ode.to_y(x_T)
    for m in range(ode.num_steps):
        y = ode_step(ode, y, m, method)
    return ode.to_x(y)


def autograd_gradients(
    ode: PFODE, x_T: torch.Tensor, loss_fn, wrt: Sequence[torch.Tensor] = (), method: Method = "euler"
) -> Gradients:
    """The reference: plain backpropagation through the whole solve."""
    return autograd_through(lambda x: solve_pf_ode(ode, x, method), x_T, loss_fn, wrt)


def discrete_adjoint_gradients(
    ode: PFODE, x_T: torch.Tensor, loss_fn, wrt: Sequence[torch.Tensor] = (), method: Method = "euler", on_step=None
) -> Gradients:
    """Exact gradients of the discretised map, by the substrate's discrete (symplectic) adjoint in y-coordinates."""
    y_T = ode.to_y(x_T.detach())
    r = discrete_adjoint(
        lambda y, m: ode_step(ode, y, m, method), y_T, ode.num_steps, lambda y: loss_fn(ode.to_x(y)), wrt, on_step
    )
    # y = x/α_T at the start, so ∂L/∂x_T = (∂L/∂y_T)/α_T in ρ-coordinates
    g_x = r.grad_x / ode.alpha_sigma(0, r.grad_x.dtype)[0] if ode.coords == "rho" else r.grad_x
    return Gradients(r.loss, g_x, r.grad_params, ode.to_x(r.end))


def continuous_adjoint_gradients(
    ode: PFODE, x_T: torch.Tensor, loss_fn, wrt: Sequence[torch.Tensor] = (), method: Method = "euler", on_step=None
) -> Gradients:
    """The paper's route: forward solve without a graph, then the augmented adjoint ODE solved backwards from the end
    state with the same solver (see the module doc; the backward integration is the substrate's
    :func:`~bytecourse.diffusion.ode.continuous_adjoint`). Holds one augmented state and one evaluation's graph."""
    wrt = list(wrt)
    # forward without a graph: y(s_0) = to_y(x_T) → y(s_N)
    with torch.no_grad():
        y = ode.to_y(x_T.detach())
        for m in range(ode.num_steps):
            y = ode_step(ode, y, m, method)
    y_end = y.detach()
    x0 = ode.to_x(y_end)
    # a(s_N) = ∂L/∂y(s_N);  a_θ(s_N) = 0
    y_req = y_end.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(ode.to_x(y_req))
        (a,) = torch.autograd.grad(loss, y_req)
    times = [ode.s(m) for m in range(ode.num_steps + 1)]
    _, a, a_p = continuous_adjoint(ode.F, times, y_end, a, wrt, method, on_step)
    # ∂L/∂x_T = a(s_0)/α_T in ρ-coordinates (y = x/α), a(s_0) in t-coordinates
    g_x = a / ode.alpha_sigma(0, a.dtype)[0] if ode.coords == "rho" else a
    return Gradients(loss.detach(), g_x, a_p, x0)


ROUTES = {
    "continuous": continuous_adjoint_gradients,
    "discrete": discrete_adjoint_gradients,
    "autograd": autograd_gradients,
}
