"""The probability-flow ODE in exponential-integrator coordinates, and its exact discrete adjoint.

VP diffusion: x_t = α_t x₀ + σ_t ε with α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t). Two forms of the PF-ODE solve the
linear part exactly (DPM-Solver; SAG §3 and AdjointDPM §3 use them):

- **noise form**: y = x/α, ρ = σ/α:   dy/dρ = ε_θ(α y, t(ρ))
- **data form**:  u = x/σ, κ = α/σ:   du/dκ = x̂_θ(σ u, t(κ)),   x̂_θ = (x − σ ε_θ)/α

One Euler step from level t to level s in either form is exactly one DDIM (η = 0) step; the two differ only in
floating-point rounding. Steps are written in x-space so that s may be the final level (ᾱ = 1, σ = 0), where
u = x/σ is undefined.

The **symplectic adjoint** (Matsubara et al. 2021, used by SAG §3.3): run the discrete map Φ = φ_{n−1}∘…∘φ_0
forward under ``no_grad`` keeping only the states, then go backwards one step at a time — recompute φ_m at
x_m with a graph, take one vector–Jacobian product λ_m = (∂φ_m/∂x_m)ᵀ λ_{m+1}, drop the graph. The result
is the exact gradient of the discretised map (up to rounding), holding n states plus one step's graph instead
of n graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]  # ε̂(x, t): condition and CFG already bound
LossFn = Callable[[torch.Tensor], torch.Tensor]  # a scalar loss of the end state
Form = Literal["noise", "data"]


@dataclass(frozen=True)
class VPLevels:
    """α, σ at a timestep of a VP schedule (α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t)); ``t = -1`` is the clean end (α = 1, σ = 0).

    The one level table behind both PF-ODE solvers: SAG's Euler map here and AdjointDPM's
    :class:`~bytecourse.adjointdpm.solvers.PFODE`."""

    alphas_cumprod: torch.Tensor

    def alpha_sigma(self, t: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        abar = torch.tensor(1.0, dtype=torch.float64) if t < 0 else self.alphas_cumprod[t].to(torch.float64)
        return abar.sqrt().to(dtype), (1 - abar).clamp(min=0).sqrt().to(dtype)


@dataclass
class Gradients:
    """What every gradient route returns: the loss, ∂loss/∂(start state), ∂loss/∂p for each requested tensor p, the
    end state of the forward solve, and (discrete adjoint only) every state it kept."""

    loss: torch.Tensor
    grad_x: torch.Tensor
    grad_params: list[torch.Tensor]
    end: torch.Tensor
    states: list[torch.Tensor] | None = None


def check_grid(timesteps: Sequence[int], *, clean_end: bool = True, num_levels: int | None = None) -> list[int]:
    """The grid as ints, or one ``ValueError``: a strictly decreasing list of ≥ 2 levels, the last ≥ −1 (the clean end,
    when ``clean_end``) or ≥ 0, and the first < ``num_levels`` (the schedule's length) when given."""
    ts = [int(t) for t in timesteps]
    low = -1 if clean_end else 0
    top = "" if num_levels is None else f", below {num_levels}"
    if (
        len(ts) < 2
        or any(b >= a for a, b in zip(ts, ts[1:]))
        or ts[-1] < low
        or (num_levels is not None and ts[0] >= num_levels)
    ):
        raise ValueError(f"timesteps must be a strictly decreasing grid of ≥2 levels ending at ≥ {low}{top}, got {ts}")
    return ts


def euler_step(eps_fn: EpsFn, x: torch.Tensor, t: int, s: int, levels: VPLevels, form: Form = "noise") -> torch.Tensor:
    """One Euler step of the PF-ODE from level ``t`` to level ``s`` (``s < t``; ``s = -1`` is x₀).

    noise form: x_s = α_s (x_t/α_t + (ρ_s − ρ_t) ε̂);   data form: x_s = σ_s (x_t/σ_t) + σ_s(κ_s − κ_t) x̂₀,
    the latter with σ_s κ_s = α_s so the final level is reachable. Both equal DDIM (Song et al. Eq. 12, σ=0).
    """
    if form not in ("noise", "data"):
        raise ValueError(f"form must be 'noise' or 'data', got {form!r}")
    if not s < t:
        raise ValueError(f"the solver runs from high to low noise: need s < t, got t={t}, s={s}")
    a_t, s_t = levels.alpha_sigma(t, x.dtype)
    a_s, s_s = levels.alpha_sigma(s, x.dtype)
    eps = eps_fn(x, t)
    if form == "noise":
        # x_s = α_s (x_t/α_t + (ρ_s − ρ_t) ε̂),  ρ = σ/α
        return a_s * (x / a_t + (s_s / a_s - s_t / a_t) * eps)
    # x̂₀ = (x_t − σ_t ε̂)/α_t;  x_s = (σ_s/σ_t) x_t + (α_s − σ_s α_t/σ_t) x̂₀  (= σ_s u_t + σ_s (κ_s − κ_t) x̂₀)
    x0 = (x - s_t * eps) / a_t
    return (s_s / s_t) * x + (a_s - s_s * a_t / s_t) * x0


def solve(
    eps_fn: EpsFn,
    x: torch.Tensor,
    timesteps: Sequence[int],
    levels: VPLevels,
    form: Form = "noise",
    keep_states: bool = False,
) -> torch.Tensor | list[torch.Tensor]:
    """Euler over a decreasing grid ``timesteps`` (its last entry may be −1); the end state, or all states."""
    ts = check_grid(timesteps)
    states = [x]
    for t, s in zip(ts[:-1], ts[1:]):
        x = euler_step(eps_fn, x, t, s, levels, form)
        if keep_states:
            states.append(x)
    return states if keep_states else x


def discrete_adjoint(
    step: Callable[[torch.Tensor, int], torch.Tensor],
    x: torch.Tensor,
    num_steps: int,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    params: Sequence[torch.Tensor] = (),
    on_step: Callable[[int], None] | None = None,
) -> Gradients:
    """The exact gradient of any one-step map Φ = φ_{N−1}∘…∘φ_0, ``step(x, m) = φ_m(x)`` (Euler, Heun, any
    coordinates), holding the N+1 states and one step's graph.

    Forward under ``no_grad`` keeping the states; backward for m = N−1 … 0: recompute φ_m(x_m) with a graph, one
    VJP λ_m = (∂φ_m/∂x_m)ᵀ λ_{m+1} (and ∂/∂params, accumulated), drop the graph. For explicit Runge–Kutta steps this
    is the symplectic adjoint of Matsubara et al. (2021): the adjoint scheme that is the symplectic partner of the
    forward one, hence exact for the discretised map. ``on_step(m)`` is called while step m's graph is alive (memory
    probes use it)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    # forward, no graph: x_{m+1} = φ_m(x_m), keeping x_0 … x_N
    states = [x.detach()]
    with torch.no_grad():
        for m in range(num_steps):
            states.append(step(states[-1], m))
    # λ_N = ∂L/∂x_N
    end = states[-1].detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(end)
        (lam,) = torch.autograd.grad(loss, end)
    grads = [torch.zeros_like(p) for p in params]
    for m in reversed(range(num_steps)):
        xm = states[m].detach().requires_grad_(True)
        with torch.enable_grad():
            out = step(xm, m)  # φ_m(x_m), this step's graph only
            if on_step is not None:
                on_step(m)
            # λ_m = (∂φ_m/∂x_m)ᵀ λ_{m+1};  ∂L/∂p += (∂φ_m/∂p)ᵀ λ_{m+1}
            vjp = torch.autograd.grad(out, [xm, *params], lam, allow_unused=True)
        lam = vjp[0]
        for g, v in zip(grads, vjp[1:]):
            if v is not None:
                g.add_(v)
        del out, vjp
    return Gradients(loss.detach(), lam, grads, states[-1], states)


def continuous_adjoint(
    field: Callable[[torch.Tensor, int], torch.Tensor],
    times: Sequence[float],
    y_end: torch.Tensor,
    a_end: torch.Tensor,
    params: Sequence[torch.Tensor] = (),
    method: str = "euler",
    on_step: Callable[[int], None] | None = None,
    states: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The continuous adjoint (Chen et al. 2018; AdjointDPM §3, torchdiffeq's ``odeint_adjoint``): from the end state
    y(s_N) and a(s_N) = ∂L/∂y(s_N), integrate the augmented system

        dy/ds = F(y, s),   da/ds = −aᵀ ∂F/∂y,   da_θ/ds = −aᵀ ∂F/∂θ,   a_θ(s_N) = 0

    *backwards* over the grid ``times`` = (s_0 … s_N) with Euler or Heun; ``field(y, m)`` is F at grid level m. y is
    re-integrated rather than stored, so the result is only as accurate as the solver (O(hᵖ)), unlike
    :func:`discrete_adjoint`. Holds one augmented state and one evaluation's graph. Returns (y(s_0), a(s_0),
    [a_θ(s_0)]).

    ``states`` (the forward pass's y at every grid level, N+1 tensors): y is *read* from them instead of re-integrated
    (the checkpointed adjoint of Zhuang et al. 2020, "ACA"): only a and a_θ are integrated, so the error the
    backward re-integration of y adds is gone, at the discrete adjoint's memory (N+1 states)."""
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")
    if states is not None and len(states) != len(times):
        raise ValueError(f"states must hold one tensor per grid level ({len(times)}), got {len(states)}")
    y, a = y_end.detach(), a_end.detach()
    a_p = [torch.zeros_like(p) for p in params]

    def G(y, a, m):
        """The augmented field at level m: (F(y), −aᵀ∂F/∂y, −aᵀ∂F/∂θ…) — one forward with a graph and one VJP."""
        yr = y.detach().requires_grad_(True)
        with torch.enable_grad():
            f = field(yr, m)
            if on_step is not None:
                on_step(m)
            vjp = torch.autograd.grad(f, [yr, *params], a, allow_unused=True)
        return f.detach(), -vjp[0], [torch.zeros_like(p) if v is None else -v for p, v in zip(params, vjp[1:])]

    for m in reversed(range(len(times) - 1)):  # integrate from level m+1 back to level m
        # h = s_m − s_{m+1}: back towards the start
        h = times[m] - times[m + 1]
        if states is not None:
            y = states[m + 1].detach()
        f1, da1, dp1 = G(y, a, m + 1)
        if method == "euler":
            # (y, a, a_θ) ← (y, a, a_θ) + h · G(y, a; s_{m+1})
            y, a = y + h * f1, a + h * da1
            a_p = [p + h * d for p, d in zip(a_p, dp1)]
        else:
            # k₁ = G(y, a; s_{m+1}),  k₂ = G((y, a) + h k₁; s_m),  (y, a, a_θ) ← (y, a, a_θ) + h (k₁ + k₂)/2
            y_pred = y + h * f1 if states is None else states[m].detach()
            f2, da2, dp2 = G(y_pred, a + h * da1, m)
            y, a = y + 0.5 * h * (f1 + f2), a + 0.5 * h * (da1 + da2)
            a_p = [p + 0.5 * h * (d1 + d2) for p, d1, d2 in zip(a_p, dp1, dp2)]
    if states is not None:
        y = states[0].detach()
    return y, a, a_p


def continuous_adjoint_grad(
    eps_fn: EpsFn, x: torch.Tensor, timesteps: Sequence[int], levels: VPLevels, loss_fn: LossFn, form: Form = "data"
) -> Gradients:
    """∂L/∂x_t for the Euler map on ``timesteps`` (as :func:`symplectic_adjoint_grad`), by the continuous adjoint
    instead: forward solve (``form``, no graph), then :func:`continuous_adjoint` of the noise-form ODE
    dy/dρ = ε̂(α y, t), y = x/α, ρ = σ/α, backwards over the same levels; ∂L/∂x_t = a(ρ_0)/α_0. The field at the
    clean end (t = −1, ρ = 0) is evaluated at the network's last trained level t = 0. The reference for how far a
    re-integrated gradient is from the exact one (SAG §3.3; the brief's §1.6 item 1)."""
    ts = check_grid(timesteps)
    with torch.no_grad():
        end = solve(eps_fn, x.detach(), ts, levels, form)
    end_r = end.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(end_r)
        (a_end,) = torch.autograd.grad(loss, end_r)
    ab = [levels.alpha_sigma(t, x.dtype) for t in ts]
    rho = [float(s / a) for a, s in ab]
    alpha_end = ab[-1][0]

    def field(y, m):
        return eps_fn(ab[m][0] * y, max(ts[m], 0))

    # y = x/α, so a(ρ_N) = α_N ∂L/∂x_N and ∂L/∂x_t = a(ρ_0)/α_0
    _, a0, _ = continuous_adjoint(field, rho, end / alpha_end, a_end * alpha_end)
    return Gradients(loss.detach(), a0 / ab[0][0], [], end)


def autograd_through(
    solve_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    params: Sequence[torch.Tensor] = (),
) -> Gradients:
    """The reference route: plain backpropagation through ``solve_fn`` (every step's graph alive at once)."""
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        end = solve_fn(xg)
        loss = loss_fn(end)
        g = torch.autograd.grad(loss, [xg, *params], allow_unused=True)
    return Gradients(
        loss.detach(), g[0], [torch.zeros_like(p) if v is None else v for p, v in zip(params, g[1:])], end.detach()
    )


def euler_gradients(
    eps_fn: EpsFn,
    x: torch.Tensor,
    timesteps: Sequence[int],
    levels: VPLevels,
    loss_fn: LossFn,
    form: Form = "noise",
    params: Sequence[torch.Tensor] = (),
    *,
    route: str = "adjoint",
    on_step: Callable[[int], None] | None = None,
) -> Gradients:
    """Gradients of ``loss_fn`` through the Euler (= DDIM) map on ``timesteps``, by one of two routes:

    - ``route="adjoint"`` (:func:`symplectic_adjoint_grad`): the exact discrete adjoint (:func:`discrete_adjoint`):
      forward under ``no_grad`` keeping the n+1 states, then for m = n−1 … 0 recompute φ_m(x_m) with a graph and
      take one VJP;
    - ``route="autograd"`` (:func:`autograd_grad`): plain backpropagation through the whole solve (n graphs alive
      at once) — the reference."""
    ts = check_grid(timesteps)
    if form not in ("noise", "data"):
        raise ValueError(f"form must be 'noise' or 'data', got {form!r}")
    if route == "autograd":
        return autograd_through(lambda z: solve(eps_fn, z, ts, levels, form), x, loss_fn, params)
    if route != "adjoint":
        raise ValueError(f"route must be 'adjoint' or 'autograd', got {route!r}")
    step = lambda xm, m: euler_step(eps_fn, xm, ts[m], ts[m + 1], levels, form)  # noqa: E731
    return discrete_adjoint(step, x, len(ts) - 1, loss_fn, params, on_step)


symplectic_adjoint_grad = partial(euler_gradients, route="adjoint")
autograd_grad = partial(euler_gradients, route="autograd")
