"""Chapter 10 exercises: self-checks (with tolerances) and reference solutions."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

from ..exercises import attempt, report
from .data import SEG_IDS, tokenize
from .evaluate import hungarian
from .models import codebook_states, dice_loss, refinement_loss


# Exercise 1 — which hidden state feeds the decoder
def check_codebook_states(fn: Callable, tol: float = 0.0):
    """``fn(hidden (1, V + T, d), ids (1, T), visual V, group) → (targets·group, d)``: for every complete group of
    codebook tokens in ``ids``, the states at the positions *before* its tokens (LISA's ``mask[t] = ids[t+1] is
    [SEG]``), offset by the ``V`` visual tokens in front."""
    ids, _ = tokenize(
        ["segment every red thing"],
        ["red circle top left [SEG0] [SEG1] [SEG2] [SEG3] , red square top centre [SEG0] [SEG1] [SEG2] [SEG3] ."],
    )
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 7 + ids.shape[1], 5, generator=g)
    got = attempt("codebook_states", fn, hidden.clone(), ids.clone(), 7, 4)
    if got is None:
        return False, float("nan")
    want = codebook_states(hidden, ids, 7, 4)[0]
    if tuple(got.shape) != tuple(want.shape):
        print(f"codebook_states: got shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        return report("codebook_states", float("inf"), tol)
    return report("codebook_states", float((got - want).abs().max()), tol)


def solution_codebook_states(hidden, ids, visual, group):
    row = ids[0].tolist()
    seg = list(SEG_IDS[:group])
    starts = [t for t in range(len(row) - group + 1) if row[t : t + group] == seg]
    return torch.cat([hidden[0, visual + t - 1 : visual + t - 1 + group] for t in starts])


# Exercise 2 — the Dice loss
def check_dice(fn: Callable, tol: float = 1e-6):
    """``fn(logits (n, H, W), truth (n, H, W)) → (n,)``: ``1 − (2Σpq + ε)/(Σp + Σq + ε)``, p = σ(logits), ε = 1e-6."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 8, 8, generator=g) * 3
    truth = (torch.rand(4, 8, 8, generator=g) > 0.6).float()
    got = attempt("dice", fn, logits.clone(), truth.clone())
    if got is None:
        return False, float("nan")
    return report("dice", float((torch.as_tensor(got) - dice_loss(logits, truth)).abs().max()), tol)


def solution_dice(logits, truth, eps=1e-6):
    p, q = torch.sigmoid(logits).flatten(1), truth.flatten(1)
    return 1 - (2 * (p * q).sum(1) + eps) / (p.sum(1) + q.sum(1) + eps)


# Exercise 3 — the Hungarian match
def check_match(fn: Callable, tol: float = 1e-9):
    """``fn(cost (r, c)) → [(row, col), …]``: ``min(r, c)`` pairs, no row or column twice, of minimum total cost.
    Checked against brute force over every assignment (and against :func:`hungarian`)."""
    g = torch.Generator().manual_seed(2)
    errs = []
    for r, c in ((3, 3), (2, 4), (4, 3)):
        cost = torch.rand(r, c, generator=g)
        got = attempt("match", fn, cost.clone())
        if got is None:
            return False, float("nan")
        pairs = [(int(i), int(j)) for i, j in got]
        if (
            len(pairs) != min(r, c)
            or len({i for i, _ in pairs}) < len(pairs)
            or len({j for _, j in pairs}) < len(pairs)
        ):
            print(f"match: {pairs} is not a one-to-one matching of {min(r, c)} pairs")
            return report("match", float("inf"), tol)
        total = sum(float(cost[i, j]) for i, j in pairs)
        best = sum(float(cost[i, j]) for i, j in hungarian(cost))
        errs.append(total - best)
    return report("match (excess cost over the optimum)", max(errs), tol)


def solution_match(cost):
    r, c = cost.shape
    if r <= c:
        best = min(
            itertools.permutations(range(c), r), key=lambda cols: sum(float(cost[i, j]) for i, j in enumerate(cols))
        )
        return list(enumerate(best))
    best = min(
        itertools.permutations(range(r), c), key=lambda rows: sum(float(cost[i, j]) for j, i in enumerate(rows))
    )
    return [(i, j) for j, i in enumerate(best)]


# Exercise 4 — the target refinement loss
def check_refinement(fn: Callable, tol: float = 1e-6):
    """``fn(logits (n, H, W), truth (n, H, W), counts) → scalar``: per question (``counts`` masks each), BCE on the
    pixels ≥ 2 of its masks claim (logit > 0), averaged over those pixels, summed over masks; ÷ all masks."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 8, 8, generator=g) * 2
    truth = (torch.rand(5, 8, 8, generator=g) > 0.5).float()
    got = attempt("refinement", fn, logits.clone(), truth.clone(), [2, 3])
    if got is None:
        return False, float("nan")
    return report("refinement", abs(float(got) - float(refinement_loss(logits, truth, [2, 3]))), tol)


def solution_refinement(logits, truth, counts):
    total, start = 0.0, 0
    for n in counts:
        lg, tr = logits[start : start + n], truth[start : start + n]
        start += n
        hit = ((lg > 0).sum(0) >= 2).float()
        if n < 2 or hit.sum() == 0:
            continue
        bce = torch.nn.functional.binary_cross_entropy_with_logits(lg, tr, reduction="none")
        total = total + ((bce * hit).flatten(1).sum(1) / hit.sum()).sum()
    return total / len(logits)


EXERCISES = {
    "codebook_states": (check_codebook_states, solution_codebook_states),
    "dice": (check_dice, solution_dice),
    "match": (check_match, solution_match),
    "refinement": (check_refinement, solution_refinement),
}
