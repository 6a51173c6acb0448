"""SAG's n-step clean-image estimate (SAG §3.2, "n function calls" of the PF-ODE from t to 0).

Training-free guidance scores a clean estimate x̂₀(x_t). FreeDoM and Universal Guidance use the one-step
(Tweedie) estimate x̂₀ = (x_t − σ_t ε̂)/α_t, which is poor at high noise. SAG instead solves the probability-flow
ODE from t to 0 with n Euler (= DDIM) steps along a sub-grid of the sampler's *remaining* timesteps.

Grid convention. Ours: n steps = n network evaluations, the grid is [t, n−1 points spread evenly by index over
the remaining sampler timesteps, −1 (the clean end)], so n = 1 is exactly Tweedie. The paper's code counts grid
*points* instead and ends at the last sampler timestep, so its "n = 4" is 3 steps; the notebook says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..diffusion.ode import EpsFn, Form, VPLevels, solve


def clean_estimate_grid(sampler_timesteps: Sequence[int], index: int, n: int) -> list[int]:
    """The n-step grid from ``sampler_timesteps[index]`` to −1 (fewer steps if fewer timesteps remain)."""
    ts = [int(t) for t in sampler_timesteps]
    if not 0 <= index < len(ts):
        raise ValueError(f"index must be in [0, {len(ts) - 1}], got {index}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    remaining = ts[index + 1 :]
    k = min(n - 1, len(remaining))
    if k == 0:
        middle: list[int] = []
    else:
        # k points evenly spaced by index over the remaining timesteps, always including the last one
        picks = (
            torch.linspace(len(remaining) - 1, 0, k).round().long().flip(0).tolist() if k > 1 else [len(remaining) - 1]
        )
        middle = [remaining[i] for i in sorted(set(picks))]
    return [ts[index], *middle, -1]


def clean_estimate(
    eps_fn: EpsFn,
    x_t: torch.Tensor,
    sampler_timesteps: Sequence[int],
    index: int,
    n: int,
    levels: VPLevels,
    form: Form = "data",
) -> torch.Tensor:
    """x̂₀⁽ⁿ⁾(x_t): n Euler steps of the PF-ODE (data form by default, as SAG's code) from the current level to 0."""
    return solve(eps_fn, x_t, clean_estimate_grid(sampler_timesteps, index, n), levels, form)
