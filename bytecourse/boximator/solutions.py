"""Chapter 04 exercises: self-checks (with tolerances) and reference solutions."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..exercises import attempt, report
from .boxes import relax, soften, to_frame
from .control import FourierEmbedder


# Exercise 1 — the Fourier features of a box token
def check_fourier(fn: Callable, tol: float = 1e-6):
    """``fn(x (..., S)) → (..., 16·S)``: sin/cos(x·100^{k/8}), k = 0..7, laid out frequency-major, then
    (sin, cos), then scalar (the layout of diffusers' ``get_fourier_embeds_from_boundingbox``)."""
    x = torch.rand(5, 8, generator=torch.Generator().manual_seed(0))
    got = attempt("fourier", fn, x)
    if got is None:
        return False, float("nan")
    ref = FourierEmbedder()(x)
    if got.shape != ref.shape:
        print(f"fourier: expected shape {tuple(ref.shape)}, got {tuple(got.shape)}")
        return False, float("inf")
    return report("fourier", float((got - ref).abs().max()), tol)


def solution_fourier(x):
    freqs = 100.0 ** (torch.arange(8) / 8)
    emb = x[..., None] * freqs  # (..., S, 8)
    emb = torch.stack([emb.sin(), emb.cos()], dim=-1)  # (..., S, 8, 2)
    return emb.movedim(-3, -1).flatten(-3)  # (..., 8, 2, S) → (..., 16·S)


# Exercise 2 — soft boxes: Beta(1, 8) margins
def check_soft_margins(fn: Callable, tol: float = 0.01):
    """``fn(n, generator) → (n,)`` samples of Beta(1, 8) drawn from ``torch.rand`` with ``generator``. The check
    compares mean and variance with 1/9 and 8/810, and the soft boxes they make with the library's."""
    got = attempt("soft margins", fn, 200_000, torch.Generator().manual_seed(0))
    if got is None:
        return False, float("nan")
    mean_err = abs(float(got.mean()) - 1 / 9)
    var_err = abs(float(got.var()) - 8 / (81 * 10))
    lib = soften(torch.full((200_000, 4), 0.5), torch.Generator().manual_seed(0))
    lib_margin = (0.5 - lib[:, 0]).clamp(max=0.5)
    sample_err = abs(float(got.clamp(max=0.5).mean()) - float(lib_margin.mean()))
    return report("soft margins (mean, variance, vs library)", max(mean_err, 10 * var_err, sample_err), tol)


def solution_soft_margins(n, generator):
    u = torch.rand(n, generator=generator)
    return 1.0 - (1.0 - u) ** (1.0 / 8.0)  # inverse of the CDF 1 − (1 − x)^8


# Exercise 3 — Boximator's classifier-free guidance
def check_box_cfg(fn: Callable, tol: float = 1e-6):
    """``fn(e_box, e_nobox, e_uncond, w_box, w_text) → ε̂`` where ``e_box = ε(c, boxes)``, ``e_nobox = ε(c, ∅_box)``,
    ``e_uncond = ε(∅, ∅_box)``: box guidance against null box tokens plus caption guidance."""
    g = torch.Generator().manual_seed(3)
    e = [torch.randn(2, 8, 3, 4, 4, generator=g) for _ in range(3)]
    errs = []
    for w_box, w_text in ((1.0, 1.0), (4.0, 1.0), (3.0, 2.0)):
        got = attempt("box cfg", fn, *e, w_box, w_text)
        if got is None:
            return False, float("nan")
        ref = e[1] + w_box * (e[0] - e[1]) + (w_text - 1.0) * (e[1] - e[2])
        errs.append(float((got - ref).abs().max()))
    return report("box cfg", max(errs), tol)


def solution_box_cfg(e_box, e_nobox, e_uncond, w_box, w_text):
    return e_nobox + w_box * (e_box - e_nobox) + (w_text - 1.0) * (e_nobox - e_uncond)


# Exercise 4 — the border convention and relaxation
def check_border_and_relax(fn: Callable, tol: float = 1e-6):
    """``fn(boxes_full (N, 4), margin) → (N, 4)``: the box a user request holds for geometric boxes that may lie
    outside the frame (a line on the border when wholly outside), relaxed by ``margin`` on every side."""
    full = torch.tensor([[-0.5, 0.2, -0.2, 0.4], [0.3, 0.3, 0.5, 0.5], [0.8, 0.9, 1.1, 1.4]])
    got = attempt("border + relax", fn, full, 0.1)
    if got is None:
        return False, float("nan")
    return report("border + relax", float((got - relax(to_frame(full), 0.1)).abs().max()), tol)


def solution_border_and_relax(boxes_full, margin):
    inside = boxes_full.clamp(0.0, 1.0)
    return (inside + torch.tensor([-margin, -margin, margin, margin])).clamp(0.0, 1.0)


EXERCISES = {
    "fourier": (check_fourier, solution_fourier),
    "soft_margins": (check_soft_margins, solution_soft_margins),
    "box_cfg": (check_box_cfg, solution_box_cfg),
    "border_and_relax": (check_border_and_relax, solution_border_and_relax),
}
