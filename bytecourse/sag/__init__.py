"""Chapter 01 — SAG: training-free guidance with an n-step clean estimate and the symplectic adjoint
(arXiv 2312.12030). Work in progress: the n-step estimate is here; the guided sampler, baselines and losses
follow."""

from .estimate import clean_estimate, clean_estimate_grid

__all__ = ["clean_estimate", "clean_estimate_grid"]
