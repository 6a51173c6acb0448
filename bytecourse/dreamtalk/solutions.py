"""Chapter 07 exercises: self-checks (with tolerances) and reference solutions."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..exercises import attempt, report
from ..worlds.talking import MOUTH_DIMS, D, smooth_along_time
from .judges import frechet_distance, lse_from_distances


# Exercise 1 — coarticulation: a Gaussian smoothing of the per-frame targets along time
def check_coarticulation(fn: Callable, tol: float = 1e-5):
    """``fn(targets (B, T, C), sigma) → smoothed (B, T, C)``: a normalised Gaussian kernel of std ``sigma`` frames
    (radius ⌈3σ⌉) along time, with the first and last frame repeated beyond the ends."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 30, 3, generator=g)
    errs = []
    for sigma in (0.8, 1.3, 2.5):
        got = attempt("coarticulation", fn, x.clone(), sigma)
        if got is None:
            return False, float("nan")
        errs.append(float((got - smooth_along_time(x, sigma)).abs().max()))
    return report("coarticulation", max(errs), tol)


def solution_coarticulation(targets, sigma):
    import math

    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=targets.dtype) / sigma) ** 2)
    k = k / k.sum()
    padded = torch.cat([targets[:, :1].expand(-1, r, -1), targets, targets[:, -1:].expand(-1, r, -1)], 1)
    return torch.stack([(padded[:, i : i + 2 * r + 1] * k[None, :, None]).sum(1) for i in range(targets.shape[1])], 1)


# Exercise 2 — SyncNet's confidence and distance
def check_lse(fn: Callable, tol: float = 1e-6):
    """``fn(dists (B, offsets)) → (lse_d (B,), lse_c (B,))``: the distance at the best offset, and how far the median
    offset's distance lies above it."""
    g = torch.Generator().manual_seed(1)
    dists = torch.rand(5, 13, generator=g) + 0.2
    dists[:, 6] -= 0.15  # the in-sync offset stands out
    got = attempt("lse", fn, dists.clone())
    if got is None:
        return False, float("nan")
    ref = lse_from_distances(dists)
    err = max(float((got[0] - ref["lse_d"]).abs().max()), float((got[1] - ref["lse_c"]).abs().max()))
    return report("lse", err, tol)


def solution_lse(dists):
    d = dists.min(1).values
    return d, dists.median(1).values - d


# Exercise 3 — the Fréchet distance between two Gaussian fits
def check_frechet(fn: Callable, tol: float = 1e-6):
    """``fn(a (N, d), b (M, d)) → float``: ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}), with
    unbiased covariances. Hint: a symmetric PSD square root is V diag(√λ) Vᵀ from ``torch.linalg.eigh``."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(200, 4, generator=g, dtype=torch.float64)
    b = (
        torch.randn(150, 4, generator=g, dtype=torch.float64)
        @ torch.diag(torch.tensor([1.0, 2, 0.5, 1], dtype=torch.float64))
        + 0.3
    )
    errs = []
    for x, y in ((a, b), (a, a)):
        got = attempt("frechet", fn, x, y)
        if got is None:
            return False, float("nan")
        errs.append(abs(float(got) - frechet_distance(x, y)))
    return report("frechet", max(errs), tol)


def solution_frechet(a, b):
    def sqrtm(m):
        vals, vecs = torch.linalg.eigh((m + m.T) / 2)
        return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T

    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    r1 = sqrtm(s1)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + torch.trace(s1 + s2) - 2 * torch.trace(sqrtm(r1 @ s2 @ r1)))


# Exercise 4 — the lip refiner's splice
def check_splice(fn: Callable, tol: float = 0.0):
    """``fn(coeffs (B, T, D), mouth (B, T, 4)) → coeffs`` with the mouth coefficients (``MOUTH_DIMS``) replaced by
    ``mouth`` and every other coefficient untouched; ``coeffs`` itself must not be modified."""
    g = torch.Generator().manual_seed(3)
    coeffs, mouth = torch.randn(2, 10, D, generator=g), torch.randn(2, 10, 4, generator=g)
    before = coeffs.clone()
    got = attempt("splice", fn, coeffs, mouth)
    if got is None:
        return False, float("nan")
    want = before.clone()
    want[..., MOUTH_DIMS] = mouth
    err = float((got - want).abs().max()) + float((coeffs - before).abs().max())
    return report("splice", err, tol)


def solution_splice(coeffs, mouth):
    out = coeffs.clone()
    out[..., MOUTH_DIMS] = mouth
    return out


EXERCISES = {
    "coarticulation": (check_coarticulation, solution_coarticulation),
    "lse": (check_lse, solution_lse),
    "frechet": (check_frechet, solution_frechet),
    "splice": (check_splice, solution_splice),
}
