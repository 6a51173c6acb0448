"""Chapter 08 exercises: self-checks (with tolerances) and reference solutions."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..exercises import attempt, report
from .data import Samples, concatenate
from .evaluate import rank_accuracy
from .models import itc_loss


# Exercise 1 — concatenate a batch
def check_concatenation(fn: Callable, tol: float = 0.0):
    """``fn(frames (B, n, 3, H, W), texts, members (B, K)) → (frames (B, K·n, 3, H, W), texts)``: each row's
    members' frames one after another, and their captions joined with spaces in the same order."""
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(6, 2, 3, 4, 4, generator=g)
    texts = ["a red circle", "a blue square", "a green triangle", "a cyan circle", "a yellow square", "a red square"]
    members = torch.tensor([[0, 4, 2], [1, 0, 5], [2, 3, 1], [3, 5, 0], [4, 1, 3], [5, 2, 4]])
    got = attempt("concatenation", fn, frames.clone(), list(texts), members.clone())
    if got is None:
        return False, float("nan")
    want = concatenate(Samples(frames, texts), members)
    if tuple(got[0].shape) != tuple(want.frames.shape) or list(got[1]) != want.texts:
        print(f"concatenation: got frames {tuple(got[0].shape)} and texts {list(got[1])[:2]}…")
        return report("concatenation", float("inf"), tol)
    return report("concatenation", float((got[0] - want.frames).abs().max()), tol)


def solution_concatenation(frames, texts, members):
    joined = frames[members].flatten(1, 2)  # (B, K, n, ...) → (B, K·n, ...)
    return joined, [" ".join(texts[j] for j in row) for row in members.tolist()]


# Exercise 2 — ITC with label smoothing
def check_itc(fn: Callable, tol: float = 1e-5):
    """``fn(sim (B, B), label_smoothing) → loss``: the mean of video→text and text→video cross-entropies, the
    diagonal as targets, each target smoothed (1 − ε on the match, ε / B spread over all B)."""
    g = torch.Generator().manual_seed(1)
    errs = []
    for b, eps in ((4, 0.1), (7, 0.0), (5, 0.3)):
        sim = torch.randn(b, b, generator=g) * 3
        got = attempt("itc", fn, sim.clone(), eps)
        if got is None:
            return False, float("nan")
        errs.append(abs(float(got) - float(itc_loss(sim, eps))))
    return report("itc", max(errs), tol)


def solution_itc(sim, label_smoothing):
    b = sim.shape[0]
    target = torch.full((b, b), label_smoothing / b) + torch.eye(b) * (1 - label_smoothing)
    ce = lambda logits: -(target * logits.log_softmax(-1)).sum(-1).mean()  # noqa: E731
    return (ce(sim) + ce(sim.T)) / 2


# Exercise 3 — order-sensitive retrieval with ties
def check_rank_accuracy(fn: Callable, tol: float = 1e-6):
    """``fn(scores (N, 1 + M)) → (N,)``: with the truth in column 0, 1 / (number of columns tied at the top) when
    the truth is among them, else 0 — so a model blind to order scores exactly 1 / (1 + M), chance."""
    scores = torch.tensor(
        [[2.0, 1.0, 0.0, 1.5], [0.0, 1.0, 0.5, 0.2], [1.0, 1.0, 0.0, 1.0], [0.3, 0.3, 0.3, 0.3], [1.0, 2.0, 2.0, 0.0]]
    )
    got = attempt("rank_accuracy", fn, scores.clone())
    if got is None:
        return False, float("nan")
    return report("rank_accuracy", float((torch.as_tensor(got).float() - rank_accuracy(scores)).abs().max()), tol)


def solution_rank_accuracy(scores):
    top = scores.max(dim=1, keepdim=True).values
    at_top = scores == top
    return at_top[:, 0].float() / at_top.sum(1).float()


# Exercise 4 — mean pooling forgets the order
def check_order_blind_pool(fn: Callable, tol: float = 1e-6):
    """``fn(tokens (B, F, x, C)) → (B, C)``: ITC's video side before its projection, the frames' [CLS] tokens
    (token 0) averaged over frames. The check also shuffles the frames: the result must not change."""
    g = torch.Generator().manual_seed(2)
    tokens = torch.randn(3, 5, 4, 6, generator=g)
    got = attempt("order_blind_pool", fn, tokens.clone())
    if got is None:
        return False, float("nan")
    shuffled = attempt("order_blind_pool", fn, tokens[:, torch.tensor([3, 0, 4, 1, 2])].clone())
    want = tokens[:, :, 0].mean(1)
    err = max(float((got - want).abs().max()), float((shuffled - want).abs().max()))
    return report("order_blind_pool", err, tol)


def solution_order_blind_pool(tokens):
    return tokens[:, :, 0].mean(1)


EXERCISES = {
    "concatenation": (check_concatenation, solution_concatenation),
    "itc": (check_itc, solution_itc),
    "rank_accuracy": (check_rank_accuracy, solution_rank_accuracy),
    "order_blind_pool": (check_order_blind_pool, solution_order_blind_pool),
}
