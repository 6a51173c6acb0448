"""AdjointDPM (Pan et al., arXiv 2307.10711, §3): the probability-flow ODE, and gradients through its solution by the
augmented adjoint ODE solved backwards.

**Two coordinate systems for the same ODE** (VP diffusion, x_t = α_t x₀ + σ_t ε):

- ``"t"`` — the raw PF-ODE in x and the timestep (Song et al. 2021, Eq. 13):
  dx/dt = f(t) x + g²(t)/(2σ_t) ε_θ = −½ β(t) (x − ε_θ(x, t)/σ_t),  with β(t) = −d log ᾱ/dt.
  Stiff: β grows without bound near T (the cosine schedule caps it at 0.999 per step) and ε/σ blows up near 0.
- ``"rho"`` — the paper's exponential-integrator reparameterisation (§3.2, the noise form of DPM-Solver):
  y = x/α, ρ = σ/α:  dy/dρ = ε_θ(α(ρ) y, t(ρ)).  No linear term left, nothing stiff; one Euler step is one DDIM step.

Solvers: Euler, and Heun (explicit trapezoid, 2nd order). Both evaluate the network only at grid levels. **Three
grids** (:func:`make_grid`), each a decreasing list of levels from ``t_max`` to ``t_min``:

- ``"time"`` — uniform in t, integer levels (the official code's ``linspace(0, 999, N)``). In ρ-coordinates its
  first step spans ρ 34 → ~5 at N = 10 (``applications.start_level_facts``): most of the error sits there.
- ``"log_rho"`` — uniform in log ρ (DPM-Solver's grid, uniform in λ = log α/σ = −log ρ): every step shrinks
  ρ by the same factor, so the steps are short where ρ is small and the image forms. The levels are fractional;
  ᾱ between two trained levels is interpolated linearly in log ᾱ (exact at integers), and the network reads a
  fractional t through its sinusoidal embedding.
- ``"rho"`` — uniform in ρ: kept only as a contrast row. ρ runs from ~34 (``T_MAX``) to ~0.006, so all but the last
  step lie at ρ > 1 and the whole image forms in the last step.

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

**Tried and not kept** (issue 16; the primer's model, evaluation seed 0, 2 samples, Heun, N = 20, relative error of
∂L/∂x_T against Heun on 100–200 log-ρ steps, which agree to 0.02 on this seed; the eval's tables hold the kept
settings):

- EDM's grid (ρ uniform in ρ^(1/7), Karras et al. 2022; ρ here is EDM's σ): continuous adjoint 0.19 (exact gradient
  of the solve 0.14), ρ^(1/3): 0.26 (0.068); log-ρ: 0.21 (0.093). No grid brings the continuous adjoint to 0.1.
- The data form (y = x/σ, κ = α/σ, dy/dκ = x̂₀; the other exponential-integrator form of the brief's §0): continuous
  adjoint 0.19, but the forward solve is worse (exact gradient 0.40).
- Checkpointing y (``checkpoints=True``): 0.18 instead of 0.21, so re-integrating y is a small part of the error;
  the rest comes from integrating the adjoint a itself with the same steps (our reading, not measured apart: near the
  data end ∂F/∂y varies fast in ρ, so a is the stiff part of the augmented system).
- torchdiffeq's dopri5 at rtol = atol = 10⁻²: 4.5 (44 + 20 evaluations), useless; see the eval's adaptive rows.
- DPM-Solver-2 (measured 2026-12-07, scratch, N = 20 on the log-ρ grid, 2 evaluations per step as Heun; the stage
  at the geometric midpoint √(ρ_m ρ_{m+1}), i.e. the midpoint in λ; the same rule backwards on the augmented
  system). ∂L/∂x_T error per sample, continuous adjoint, midpoint vs Heun — seed 0: 0.035 / 0.106, 0.141 / 0.137,
  0.181 / 0.396; seed 1, sample 1: 0.069 / 0.206, sample 2: 1.49 / 0.44; seed 2, sample 0: 0.201 / 0.122. The
  exact gradient of each solve (the forward's own floor) moves just as much: midpoint 0.079, 0.165, 0.430 against
  Heun's 0.075, 0.107, 0.070 on seed 0. Also tried, same samples: Heun and midpoint in u = log ρ (field ρ·ε̂), and the
  adjoint carried as b = ρ·a (the data form's adjoint) — none is better on every sample. What limits N = 20 is the
  forward solve of this CFG-2 field on some samples (seed 1's first sample moves by 3–4 in every scheme, a sample the
  reference check leaves out), not the adjoint scheme: no 2-evaluation step brings every sample to 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..diffusion.ode import Gradients, VPLevels, autograd_through, continuous_adjoint, discrete_adjoint

Coords = Literal["rho", "t"]
COORDS: tuple[Coords, ...] = ("t", "rho")
Method = Literal["euler", "heun"]
EpsFn = Callable[[torch.Tensor, int], torch.Tensor]  # ε̂(x, t) with condition, CFG and weights bound by closure


GridKind = Literal["time", "log_rho", "rho"]
GRIDS: tuple[GridKind, ...] = ("time", "log_rho", "rho")


def time_grid(num_steps: int, t_max: int = 999, t_min: int = 0) -> list[int]:
    """``num_steps + 1`` distinct integer levels from ``t_max`` down to ``t_min``, uniform in t."""
    if not 1 <= num_steps <= t_max - t_min:
        raise ValueError(f"num_steps must be in [1, {t_max - t_min}], got {num_steps}")
    grid = torch.linspace(t_max, t_min, num_steps + 1).round().long().tolist()
    return [int(t) for t in grid]


def abar_at(t: float, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """ᾱ at a (possibly fractional) level t, float64: the table at integers, log ᾱ linear in between."""
    acp = alphas_cumprod.to(torch.float64)
    if float(t) == int(t):
        return acp[int(t)]
    k = int(t)
    w = float(t) - k
    return torch.exp((1 - w) * acp[k].log() + w * acp[k + 1].log())


def rho_at(t: float, alphas_cumprod: torch.Tensor) -> float:
    """ρ = σ/α = √((1 − ᾱ)/ᾱ) at level t."""
    a = float(abar_at(t, alphas_cumprod))
    return ((1 - a) / a) ** 0.5


def level_at_rho(rho: float, alphas_cumprod: torch.Tensor) -> float:
    """The fractional level t with ρ(t) = ``rho`` (the inverse of :func:`rho_at`): ᾱ = 1/(1 + ρ²), and log ᾱ is linear
    in t between two integer levels, so t is found in closed form inside the bracketing interval."""
    log_acp = alphas_cumprod.to(torch.float64).log()
    target = -torch.log1p(torch.tensor(float(rho), dtype=torch.float64) ** 2)  # log ᾱ* (log ᾱ falls with t)
    if not float(log_acp[-1]) <= float(target) <= float(log_acp[0]):
        raise ValueError(f"rho={rho} lies outside the schedule's range")
    k = int(torch.searchsorted(-log_acp, -target, right=True)) - 1
    k = min(max(k, 0), len(log_acp) - 2)
    return k + float((target - log_acp[k]) / (log_acp[k + 1] - log_acp[k]))


def make_grid(
    num_steps: int,
    kind: GridKind = "time",
    t_max: int = 999,
    t_min: int = 0,
    alphas_cumprod: torch.Tensor | None = None,
) -> list[float]:
    """``num_steps + 1`` levels from ``t_max`` to ``t_min`` (both kept exactly), uniform in t, in log ρ or in ρ (see
    the module doc). The ρ grids need the schedule's ``alphas_cumprod``; their inner levels are fractional."""
    if kind == "time":
        return time_grid(num_steps, t_max, t_min)
    if kind not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {kind!r}")
    if alphas_cumprod is None:
        raise ValueError("a ρ grid needs the schedule's alphas_cumprod")
    if num_steps < 1 or not 0 <= t_min < t_max < len(alphas_cumprod):
        raise ValueError(f"need num_steps ≥ 1 and 0 ≤ t_min < t_max < {len(alphas_cumprod)}")
    hi, lo = rho_at(t_max, alphas_cumprod), rho_at(t_min, alphas_cumprod)
    u = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    rhos = hi * (lo / hi) ** u if kind == "log_rho" else hi + (lo - hi) * u
    inner = [level_at_rho(float(r), alphas_cumprod) for r in rhos[1:-1]]
    return [t_max, *inner, t_min]


def check_levels(grid: Sequence[float], num_levels: int) -> list[float]:
    """The grid (integral levels as ints, so the table is read exactly), or one ``ValueError``: strictly decreasing,
    ≥ 2 levels, inside [0, ``num_levels`` − 1]."""
    ts = [int(t) if float(t) == int(t) else float(t) for t in grid]
    if len(ts) < 2 or any(b >= a for a, b in zip(ts, ts[1:])) or ts[-1] < 0 or ts[0] > num_levels - 1:
        raise ValueError(
            f"the grid must be a strictly decreasing list of ≥2 levels in [0, {num_levels - 1}], got {list(grid)}"
        )
    return ts


@dataclass
class PFODE:
    """The PF-ODE of a VP model in ``coords``: ``F(y, m)`` at grid level m, and the x ↔ y maps at the ends."""

    eps_fn: EpsFn
    alphas_cumprod: torch.Tensor
    grid: Sequence[float]
    coords: Coords = "rho"

    def __post_init__(self):
        if self.coords not in COORDS:
            raise ValueError(f"coords must be one of {COORDS}, got {self.coords!r}")
        self.grid = check_levels(self.grid, len(self.alphas_cumprod))
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
        """α, σ at grid level m (the substrate's :class:`~bytecourse.diffusion.ode.VPLevels` at integer levels; log ᾱ
        interpolated at fractional ones)."""
        t = self.grid[m]
        if isinstance(t, int):
            return self.levels.alpha_sigma(t, dtype)
        abar = abar_at(t, self._abar)
        return abar.sqrt().to(dtype), (1 - abar).sqrt().to(dtype)

    def s(self, m: int) -> float:
        """The integration variable at level m: ρ = σ/α, or t."""
        if self.coords == "t":
            return float(self.grid[m])
        return rho_at(self.grid[m], self._abar)

    def beta(self, t: float) -> torch.Tensor:
        """β(t) = −d log ᾱ/dt (the table's centred difference, linear in between)."""
        if isinstance(t, int):
            return self._beta[t]
        k, w = int(t), t - int(t)
        return (1 - w) * self._beta[k] + w * self._beta[k + 1]

    def F(self, y: torch.Tensor, m: int) -> torch.Tensor:
        t = self.grid[m]
        alpha, sigma = self.alpha_sigma(m, y.dtype)
        if self.coords == "rho":
            return self.eps_fn(alpha * y, t)
        beta = self.beta(t).to(y.dtype)
        return -0.5 * beta * (y - self.eps_fn(y, t) / sigma)

    def scale(self, m: int, dtype) -> torch.Tensor | float:
        """x = scale · y at grid level m: α in ρ-coordinates (y = x/α), 1 in t."""
        return 1.0 if self.coords == "t" else self.alpha_sigma(m, dtype)[0]

    def to_y(self, x_T: torch.Tensor) -> torch.Tensor:
        return x_T / self.scale(0, x_T.dtype)

    def to_x(self, y_end: torch.Tensor) -> torch.Tensor:
        return y_end * self.scale(len(self.grid) - 1, y_end.dtype)

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
    g_x = r.grad_x / ode.scale(0, r.grad_x.dtype)
    return Gradients(r.loss, g_x, r.grad_params, ode.to_x(r.end))


def continuous_adjoint_gradients(
    ode: PFODE,
    x_T: torch.Tensor,
    loss_fn,
    wrt: Sequence[torch.Tensor] = (),
    method: Method = "euler",
    on_step=None,
    checkpoints: bool = False,
) -> Gradients:
    """The paper's route: forward solve without a graph, then the augmented adjoint ODE solved backwards from the end
    state with the same solver (see the module doc; the backward integration is the substrate's
    :func:`~bytecourse.diffusion.ode.continuous_adjoint`). Holds one augmented state and one evaluation's graph.

    ``checkpoints=True`` keeps the forward states and reads y from them on the way back (not the paper's: it
    separates the error of re-integrating y from the error of integrating the adjoint, at N+1 states of memory)."""
    wrt = list(wrt)
    # forward without a graph: y(s_0) = to_y(x_T) → y(s_N)
    with torch.no_grad():
        y = ode.to_y(x_T.detach())
        states = [y]
        for m in range(ode.num_steps):
            y = ode_step(ode, y, m, method)
            if checkpoints:
                states.append(y)
    y_end = y.detach()
    x0 = ode.to_x(y_end)
    # a(s_N) = ∂L/∂y(s_N);  a_θ(s_N) = 0
    y_req = y_end.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(ode.to_x(y_req))
        (a,) = torch.autograd.grad(loss, y_req)
    times = [ode.s(m) for m in range(ode.num_steps + 1)]
    _, a, a_p = continuous_adjoint(ode.F, times, y_end, a, wrt, method, on_step, states if checkpoints else None)
    # ∂L/∂x_T = a(s_0)/α_T in ρ-coordinates (y = x/α), a(s_0) in t-coordinates
    g_x = a / ode.scale(0, a.dtype)
    return Gradients(loss.detach(), g_x, a_p, x0)


def adaptive_adjoint_gradients(
    ode: PFODE,
    x_T: torch.Tensor,
    loss_fn,
    wrt: Sequence[torch.Tensor] = (),
    rtol: float = 1e-4,
    atol: float = 1e-4,
    solver: str = "dopri5",
) -> tuple[Gradients, dict]:
    """The paper's own tool: torchdiffeq's ``odeint_adjoint`` (adaptive steps, error control ``rtol``/``atol``), from
    ode.grid[0] to ode.grid[-1], in the variable u = log ρ (the official code integrates in ρ-type coordinates too):

        dy/du = ρ · ε_θ(α(ρ) y, t(ρ)),   ρ = eᵘ,  α = (1 + ρ²)^(−1/2),  t(ρ) by :func:`level_at_rho`.

    u is where the steps come out even (the log-ρ grid is uniform in u), so the controller spends its evaluations
    where ε̂ changes, not where ρ is large. The grid's inner levels are ignored; only its ends count. Returns the
    gradients and ``{"nfe_forward", "nfe_backward"}`` (network evaluations in each pass)."""
    try:
        from torchdiffeq import odeint_adjoint
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("the adaptive route needs torchdiffeq: pip install torchdiffeq") from e
    if ode.coords != "rho":
        raise ValueError("the adaptive route integrates in log ρ: build the PFODE with coords='rho'")
    acp = ode._abar
    wrt = list(wrt)
    count = {"n": 0}

    lo, hi = ode.s(ode.num_steps), ode.s(0)

    def field(u, y):
        # the step-size controller may probe just past the ends: read ε̂ at the nearest end there
        rho = min(max(float(u.detach().exp()), lo), hi)
        t = level_at_rho(rho, acp)
        count["n"] += 1
        alpha = (1 + rho**2) ** -0.5
        return rho * ode.eps_fn(alpha * y, t)

    y0 = ode.to_y(x_T.detach()).requires_grad_(True)
    span = torch.tensor([math.log(ode.s(0)), math.log(ode.s(ode.num_steps))], dtype=y0.dtype)
    with torch.enable_grad():
        y_end = odeint_adjoint(
            field,
            y0,
            span,
            rtol=rtol,
            atol=atol,
            method=solver,
            adjoint_params=tuple(wrt),
            adjoint_options={"norm": "seminorm"},
        )[-1]
        nfe_forward = count["n"]
        x0 = ode.to_x(y_end)
        loss = loss_fn(x0)
        grads = torch.autograd.grad(loss, [y0, *wrt], allow_unused=True)
    g_x = grads[0] / ode.alpha_sigma(0, y0.dtype)[0]
    g_p = [torch.zeros_like(p) if g is None else g for p, g in zip(wrt, grads[1:])]
    return Gradients(loss.detach(), g_x, g_p, x0.detach()), {
        "nfe_forward": nfe_forward,
        "nfe_backward": count["n"] - nfe_forward,
    }


ROUTES = {
    "continuous": continuous_adjoint_gradients,
    "discrete": discrete_adjoint_gradients,
    "autograd": autograd_gradients,
}
