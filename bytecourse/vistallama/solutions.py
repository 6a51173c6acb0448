"""Chapter 09 exercises: self-checks (with tolerances) and reference solutions."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, rotate_half

from ..exercises import attempt, report
from .data import Fact, hallucination_rate


def _rope(positions: torch.Tensor, dim: int, theta: float = 100.0):
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    ang = positions.double()[:, None] * inv[None]
    emb = torch.cat([ang, ang], -1)
    return emb.cos()[None], emb.sin()[None]


# Exercise 1 — the widened q′ and k′
def check_widen(fn: Callable, tol: float = 1e-10):
    """``fn(q, k, q_rot, k_rot, m) → (q′, k′)`` such that q′·k′ = m (q·k) + (1 − m)(Rq·Rk) for every query/key pair;
    checked by comparing q′ k′ᵀ with the explicit EDVT logits."""
    g = torch.Generator().manual_seed(0)
    q, k = (
        torch.randn(1, 2, 6, 8, generator=g, dtype=torch.float64),
        torch.randn(1, 2, 6, 8, generator=g, dtype=torch.float64),
    )
    cos, sin = _rope(torch.arange(6), 8)
    qr, kr = apply_rotary_pos_emb(q, k, cos, sin)
    m = torch.tensor([0, 1, 1, 1, 0, 0], dtype=torch.float64)[None, None, :, None]
    got = attempt("widen", fn, q, k, qr, kr, m)
    if got is None:
        return False, float("nan")
    q2, k2 = got
    ref = torch.where(m.transpose(-1, -2).bool(), q @ k.transpose(-1, -2), qr @ kr.transpose(-1, -2))
    return report("widen", float((q2 @ k2.transpose(-1, -2) - ref).abs().max()), tol)


def solution_widen(q, k, q_rot, k_rot, m):
    return torch.cat([q, q_rot], -1), torch.cat([m * k, (1 - m) * k_rot], -1)


# Exercise 2 — RoPE logits depend only on the relative position
def check_relative(fn: Callable, tol: float = 1e-10):
    """``fn(q, k, i, j) → Rq·Rk`` with the query at position i and the key at j (use ``rope_angles`` below). The check
    shifts both positions by the same amount: the logit must not change; and compares with transformers' RoPE."""
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    vals = []
    for shift in (0, 5, 37):
        got = attempt("relative", fn, q, k, 9 + shift, 3 + shift)
        if got is None:
            return False, float("nan")
        vals.append(float(got))
    cos, sin = _rope(torch.tensor([9, 3]), 8)
    qr = q * cos[0, 0] + rotate_half(q) * sin[0, 0]
    kr = k * cos[0, 1] + rotate_half(k) * sin[0, 1]
    ref = float(qr @ kr)
    return report("relative", max(abs(v - ref) for v in vals), tol)


def rope_angles(position: int, dim: int = 8, theta: float = 100.0):
    """(cos, sin) of RoPE at one position, in transformers' layout (two halves)."""
    cos, sin = _rope(torch.tensor([position]), dim, theta)
    return cos[0, 0], sin[0, 0]


def solution_relative(q, k, i, j):
    ci, si = rope_angles(i)
    cj, sj = rope_angles(j)
    return (q * ci + rotate_half(q) * si) @ (k * cj + rotate_half(k) * sj)


# Exercise 3 — the hallucination rate
def check_hallucination(fn: Callable, tol: float = 1e-12):
    """``fn(facts) → fraction of stated facts that are false`` (0 when nothing is stated)."""
    cases = [
        [],
        [Fact("object", 0, "red circle", True)],
        [Fact("object", 0, "a", True), Fact("motion", 0, "b", False), Fact("object", 1, "c", False)],
    ]
    errs = []
    for facts in cases:
        got = attempt("hallucination", fn, facts)
        if got is None:
            return False, float("nan")
        errs.append(abs(float(got) - hallucination_rate(facts)))
    return report("hallucination", max(errs), tol)


def solution_hallucination(facts):
    return sum(not f.true for f in facts) / len(facts) if facts else 0.0


# Exercise 4 — frame selection
def check_keep(fn: Callable, tol: float = 1e-6):
    """``fn(frame_tokens, every) → kept`` with ``frame_tokens`` (B, T, Q, D), one block of Q tokens per frame from
    the recurrence, and ``kept`` the blocks of every ``every``-th frame counted back from the last one, in frame order
    (B, T′, Q, D). Checked against a selecting projector that shares its weights with an every-frame one."""
    from .projector import ProjectorConfig, SequentialProjector

    config = ProjectorConfig(image_size=16, patch=4, feat_dim=16, dim=16, queries=2, layers=1, heads=2, lm_dim=8)
    torch.manual_seed(0)
    full = SequentialProjector(config).eval()
    video = torch.rand(1, 7, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        blocks = full(video).view(1, 7, 2, 8)
        errs = []
        for every in (1, 2, 3, 7):
            selecting = SequentialProjector(ProjectorConfig(**{**config.to_dict(), "keep_every": every})).eval()
            selecting.load_state_dict(full.state_dict())
            got = attempt("keep", fn, blocks, every)
            if got is None:
                return False, float("nan")
            ref = selecting(video).view(1, -1, 2, 8)
            errs.append(float((got - ref).abs().max()) if got.shape == ref.shape else float("inf"))
    return report("keep", max(errs), tol)


def solution_keep(frame_tokens, every):
    t = frame_tokens.shape[1]
    return frame_tokens[:, list(range(t - 1, -1, -every))[::-1]]


EXERCISES = {
    "widen": (check_widen, solution_widen),
    "relative": (check_relative, solution_relative),
    "hallucination": (check_hallucination, solution_hallucination),
    "keep": (check_keep, solution_keep),
}
