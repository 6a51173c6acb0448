"""Chapter 02 — AdjointDPM: gradients through the whole sampler with the adjoint method (Pan et al., arXiv 2307.10711).

- :mod:`.solvers` — the PF-ODE in t- and ρ-coordinates on time, log-ρ and ρ grids, Euler and Heun, and the gradient
  routes: the continuous adjoint (the paper's augmented adjoint ODE), the exact discrete adjoint (the substrate's),
  autograd, and torchdiffeq's adaptive ``odeint_adjoint``
- :mod:`.applications` — the paper's three applications at toy scale (security audit, effect inversion, stylization)
- :mod:`.evaluate` — gradient-fidelity and memory tables, ``python -m bytecourse eval adjointdpm``, the live slice
- :mod:`.widget` — the gradient explorer
"""

from .solvers import (
    PFODE,
    ROUTES,
    Gradients,
    adaptive_adjoint_gradients,
    autograd_gradients,
    continuous_adjoint_gradients,
    discrete_adjoint_gradients,
    make_grid,
    ode_step,
    solve_pf_ode,
    time_grid,
)

__all__ = [
    "PFODE",
    "ROUTES",
    "Gradients",
    "adaptive_adjoint_gradients",
    "autograd_gradients",
    "continuous_adjoint_gradients",
    "discrete_adjoint_gradients",
    "make_grid",
    "solve_pf_ode",
    "ode_step",
    "time_grid",
]
