"""Chapter 05 exercises: self-checks (with tolerances) and reference solutions."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..diffusion.attention import Attention
from ..exercises import attempt, report
from .models import ReferenceAttention
from .pipeline import context_windows


# Exercise 1 — K/V concatenation: the appearance bank enters the main UNet's self-attention
def check_reference_attention(fn: Callable, tol: float = 1e-5):
    """``fn(attn, z (B·T, N, C), y (B, M, C), frames) → out (B·T, N, C)``: self-attention of ``attn`` whose keys and
    values are W_K[z, y] and W_V[z, y], y repeated for the T frames of its clip; multi-head, then ``attn.to_out``.
    Compare with :class:`~bytecourse.magicanimate.models.ReferenceAttention`."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        attn = Attention(16, heads=4)
    attn.requires_grad_(False)
    z, y = torch.randn(6, 9, 16, generator=g), torch.randn(2, 5, 16, generator=g)
    got = attempt("reference attention", fn, attn, z, y, 3)
    if got is None:
        return False, float("nan")
    attn.set_processor(ReferenceAttention("mid", "read"))
    want = attn(z, extra={"bank": {"mid": y}})
    return report("reference attention", float((got - want).abs().max()), tol)


def solution_reference_attention(attn, z, y, frames):
    y = y.repeat_interleave(frames, 0)
    kv = torch.cat([z, y], 1)
    q, k, v = (attn.split_heads(p) for p in (attn.to_q(z), attn.to_k(kv), attn.to_v(kv)))
    weights = torch.softmax(q @ k.transpose(-1, -2) / attn.head_dim**0.5, dim=-1)
    return attn.to_out(attn.merge_heads(weights @ v))


# Exercise 2 — the averaging weights of overlapping windows
def check_window_weights(fn: Callable, tol: float = 1e-6):
    """``fn(frames, window, overlap) → weights (W, frames)``: row w holds 1/c_k at the frames k of window w (c_k the
    number of windows containing frame k) and 0 elsewhere, for the windows of ``context_windows`` — so Σ_w
    weights[w] · ε̂_w is the per-frame average the pipeline takes. Every column must sum to 1."""
    errs = []
    for n, w, o in ((48, 8, 2), (20, 8, 0), (11, 4, 3)):
        got = attempt("window weights", fn, n, w, o)
        if got is None:
            return False, float("nan")
        errs.append(float((torch.as_tensor(got, dtype=torch.float64) - solution_window_weights(n, w, o)).abs().max()))
    return report("window weights", max(errs), tol)


def solution_window_weights(frames, window, overlap):
    wins = context_windows(frames, window, overlap)
    member = torch.zeros(len(wins), frames, dtype=torch.float64)
    for i, win in enumerate(wins):
        member[i, win] = 1.0
    return member / member.sum(0, keepdim=True)


# Exercise 3 — zero initialisation: a new ControlNet and new motion modules leave the model's output unchanged
def check_zero_init(fn: Callable, tol: float = 1e-7):
    """``fn(model, x (B,T,3,H,W), t (B,), iuv (B,T,3,H,W)) → (base_eps, full_eps)``: the frozen base run frame by frame
    on the null caption, and the whole freshly built model (ControlNet + motion modules, no reference). The check
    asserts your two outputs agree, and that your ``full_eps`` is the model's own."""
    from ..diffusion.unet import ImageDenoiser, UNetConfig
    from .models import MagicAnimate, MagicAnimateConfig

    with torch.random.fork_rng():
        torch.manual_seed(0)
        base = ImageDenoiser(UNetConfig(widths=(16, 16, 16), heads=2, text_dim=16, text_layers=1))
        for p in base.parameters():
            p.data.normal_(0, 0.05)
        model = MagicAnimate(
            base, MagicAnimateConfig(base_rank=2, appearance_rank=2, control_rank=2, hint_channels=8, heads=2), True
        ).eval()
    g = torch.Generator().manual_seed(1)
    x, iuv = torch.randn(2, 3, 3, 32, 32, generator=g), torch.randn(2, 3, 3, 32, 32, generator=g)
    t = torch.tensor([50, 800])
    with torch.no_grad():
        got = attempt("zero init", fn, model, x, t, iuv)
        if got is None:
            return False, float("nan")
        want = model.eps(x, t, None, iuv)
    base_eps, full_eps = got
    err = max(float((base_eps - full_eps).abs().max()), float((full_eps - want).abs().max()))
    return report("zero init", err, tol)


def solution_zero_init(model, x, t, iuv):
    b, frames = x.shape[:2]
    null = model.null_tokens.expand(b * frames, -1)
    base_eps = model.base(x.flatten(0, 1), t.repeat_interleave(frames), null).view_as(x)
    return base_eps, model.eps(x, t, None, iuv)


# Exercise 4 — averaging is exact for a frame-local model
def check_window_invariance(fn: Callable, tol: float = 1e-5):
    """``fn(eps_fn, x (B,N,...), windows) → eps (B,N,...)``: run ``eps_fn(x_window)`` on every window and average each
    frame's predictions (what :func:`~bytecourse.magicanimate.pipeline.window_eps` does at every step). With a
    frame-local ``eps_fn`` the result must equal ``eps_fn(x)`` on the whole clip, whatever the windows."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 13, 2, generator=g)
    w = torch.randn(2, 2, generator=g)

    def local(xw):
        return torch.tanh(xw @ w)

    errs = []
    for window, overlap in ((5, 2), (4, 0), (6, 5)):
        got = attempt("window invariance", fn, local, x, context_windows(13, window, overlap))
        if got is None:
            return False, float("nan")
        errs.append(float((got - local(x)).abs().max()))
    return report("window invariance", max(errs), tol)


def solution_window_invariance(eps_fn, x, windows):
    total, count = torch.zeros_like(x), torch.zeros(x.shape[1])
    for win in windows:
        total[:, win] += eps_fn(x[:, win])
        count[win] += 1
    return total / count.view(1, -1, *([1] * (x.dim() - 2)))


EXERCISES = {
    "reference_attention": (check_reference_attention, solution_reference_attention),
    "window_weights": (check_window_weights, solution_window_weights),
    "zero_init": (check_zero_init, solution_zero_init),
    "window_invariance": (check_window_invariance, solution_window_invariance),
}

__all__ = ["EXERCISES"]
