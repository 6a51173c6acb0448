"""Chapter 01 — SAG: training-free guidance with an n-step clean estimate and the symplectic adjoint
(Pan et al., arXiv 2312.12030).

- :mod:`.estimate` — x̂₀⁽ⁿ⁾(x_t): n Euler/DDIM steps of the PF-ODE to 0 (n = 1 is Tweedie, FreeDoM's estimate)
- :mod:`.guided` — the guided sampler (window, time travel, step-size rule) and the FreeDoM / Universal
  Guidance baselines; gradients by the substrate's symplectic adjoint (:mod:`bytecourse.diffusion.ode`)
- :mod:`.evaluate` — the chapter's tasks and tables (``python -m bytecourse eval sag``) and the live slice
- :mod:`.widget` — the guidance explorer
"""

from .estimate import clean_estimate, clean_estimate_grid
from .guided import (
    CountingModel,
    GuidanceConfig,
    GuidedResult,
    freedom,
    guidance_gradient,
    guided_indices,
    guided_sample,
    sag,
    unguided_sample,
    universal_guidance,
)

__all__ = [
    "CountingModel",
    "GuidanceConfig",
    "GuidedResult",
    "clean_estimate",
    "clean_estimate_grid",
    "freedom",
    "guidance_gradient",
    "guided_indices",
    "guided_sample",
    "sag",
    "unguided_sample",
    "universal_guidance",
]
