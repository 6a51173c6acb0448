"""Chapter 06 exercises: self-checks (with tolerances) and reference solutions."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..diffusion.attention import Attention
from ..evaluation import psnr
from ..exercises import attempt, report
from .models import DecoupledCrossAttention, ReferenceKV, interpolate_clip, linear_blend, noise_prior


# Exercise 1 — the latent noise prior, both forms
def check_noise_prior(fn: Callable, tol: float = 1e-5):
    """``fn(eps (B, T, C, H, W), z_ref (B, C, H, W), mode, strength) → z_T``: ``"shift"`` ε + λ·z_ref, ``"vp"``
    √γ·z_ref + √(1−γ)·ε, z_ref shared by every frame. Compared with :func:`~bytecourse.magicvideo.models.noise_prior`
    at several strengths; then the vp form must keep a unit variance (within 0.05) for unit-variance inputs."""
    g = torch.Generator().manual_seed(0)
    eps, z = torch.randn(32, 4, 3, 8, 8, generator=g), torch.randn(32, 3, 8, 8, generator=g)
    errs = []
    for mode, s in (("shift", 0.0), ("shift", 0.7), ("vp", 0.3), ("vp", 0.8)):
        got = attempt("noise prior", fn, eps, z, mode, s)
        if got is None:
            return False, float("nan")
        errs.append(float((got - noise_prior(eps, z, mode, s)).abs().max()))
    var, shift_var = float(fn(eps, z, "vp", 0.8).var()), float(fn(eps, z, "shift", 0.8).var())
    print(f"vp form at γ = 0.8: variance {var:.3f} (a shift of λ = 0.8 gives {shift_var:.3f})")
    return report("noise prior", max(errs) + (0.0 if abs(var - 1) <= 0.05 else 1.0), tol)


def solution_noise_prior(eps, z_ref, mode, strength):
    z = z_ref[:, None]
    if mode == "shift":
        return eps + strength * z
    return strength**0.5 * z + (1 - strength) ** 0.5 * eps


# Exercise 2 — decoupled cross-attention: the reference gets its own keys and values
def check_decoupled_attention(fn: Callable, tol: float = 1e-5):
    """``fn(attn, x (B·T, N, C), text (B·T, L, D), ref (B, M, D), to_k_ref, to_v_ref, frames) → (B·T, N, C)``:
    softmax(Q K_textᵀ/√d) V_text + softmax(Q K′ᵀ/√d) V′ with K′ = to_k_ref(ref), V′ = to_v_ref(ref), ``ref`` repeated
    over the ``frames`` frames of its clip, multi-head, then ``attn.to_out`` on the sum. Compared with
    :class:`~bytecourse.magicvideo.models.DecoupledCrossAttention`."""
    g = torch.Generator().manual_seed(1)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        attn = Attention(16, 8, heads=4)
        kv = ReferenceKV(16, 8)
        torch.nn.init.normal_(kv.to_v_ref.weight, std=0.3)
    attn.requires_grad_(False)
    kv.requires_grad_(False)
    x, text, ref = (
        torch.randn(6, 9, 16, generator=g),
        torch.randn(6, 5, 8, generator=g),
        torch.randn(2, 4, 8, generator=g),
    )
    got = attempt("decoupled cross-attention", fn, attn, x, text, ref, kv.to_k_ref, kv.to_v_ref, 3)
    if got is None:
        return False, float("nan")
    attn.set_processor(DecoupledCrossAttention(kv))
    want = attn(x, text, frames=3, extra={"reference": ref})
    return report("decoupled cross-attention", float((got - want).abs().max()), tol)


def solution_decoupled_attention(attn, x, text, ref, to_k_ref, to_v_ref, frames):
    def heads_attention(q, k, v):
        q, k, v = attn.split_heads(q), attn.split_heads(k), attn.split_heads(v)
        w = torch.softmax(q @ k.transpose(-1, -2) / attn.head_dim**0.5, dim=-1)
        return w @ v

    y = ref.repeat_interleave(frames, 0)
    q = attn.to_q(x)
    out = heads_attention(q, attn.to_k(text), attn.to_v(text)) + heads_attention(q, to_k_ref(y), to_v_ref(y))
    return attn.to_out(attn.merge_heads(out))


# Exercise 3 — linear blending, the VFI baseline to beat
def check_linear_vfi(fn: Callable, tol: float = 1e-6):
    """``fn(clip (B, T, 3, H, W)) → (B, 2T − 1, 3, H, W)``: the keyframes at the even indices, the mean of each
    neighbouring pair between them. Checked against :func:`~bytecourse.magicvideo.models.interpolate_clip` with
    :func:`~bytecourse.magicvideo.models.linear_blend` on a world clip; the PSNR of your middle frames against the
    world's exact ones is printed — the number the trained interpolator must beat."""
    from .evaluate import eval_clips

    clips = eval_clips(0, 4, frames=15, size=64).videos
    got = attempt("linear-blend VFI", fn, clips[:, ::2])
    if got is None:
        return False, float("nan")
    want = interpolate_clip(clips[:, ::2], linear_blend)
    if tuple(got.shape) != tuple(want.shape):
        print(f"linear-blend VFI: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        return False, float("inf")
    mid = float(psnr(got[:, 1::2].flatten(0, 1), clips[:, 1::2].flatten(0, 1)).mean())
    print(f"PSNR of the blended middle frames vs the exact ones: {mid:.2f} dB")
    return report("linear-blend VFI", float((got - want).abs().max()), tol)


def solution_linear_vfi(clip):
    b, t = clip.shape[:2]
    out = torch.empty(b, 2 * t - 1, *clip.shape[2:])
    out[:, ::2] = clip
    out[:, 1::2] = (clip[:, :-1] + clip[:, 1:]) / 2
    return out


# Exercise 4 — V2V's stem: one pixel of every 2×2 block is the 32-px clip
def check_subpixel_stem(fn: Callable, tol: float = 1e-5):
    """``fn(conv_in (a Conv2d on 12 = 3·2·2 channels)) → weight (out, 48, 3, 3)``: the weight of a conv on the
    pixel-unshuffle-by-4 of a 64-px image that computes ``conv_in`` on the pixel-unshuffle-by-2 of x[..., ::2, ::2].
    Checked on random images (V2V builds its stem this way, so its backbone starts from the features it knows)."""
    g = torch.Generator().manual_seed(2)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        conv_in = torch.nn.Conv2d(12, 8, 3, padding=1)
    x = torch.randn(2, 3, 64, 64, generator=g)
    weight = attempt("sub-pixel stem", fn, conv_in)
    if weight is None:
        return False, float("nan")
    with torch.no_grad():
        got = F.conv2d(F.pixel_unshuffle(x, 4), weight, conv_in.bias, padding=1)
        want = conv_in(F.pixel_unshuffle(x[..., ::2, ::2], 2))
    return report("sub-pixel stem", float((got - want).abs().max()), tol)


def solution_subpixel_stem(conv_in):
    w = torch.zeros(conv_in.out_channels, 48, 3, 3)
    for c in range(3):
        for dy in range(2):
            for dx in range(2):
                w[:, c * 16 + 2 * dy * 4 + 2 * dx] = conv_in.weight[:, c * 4 + dy * 2 + dx].detach()
    return w


EXERCISES = {
    "noise_prior": (check_noise_prior, solution_noise_prior),
    "decoupled_attention": (check_decoupled_attention, solution_decoupled_attention),
    "linear_vfi": (check_linear_vfi, solution_linear_vfi),
    "subpixel_stem": (check_subpixel_stem, solution_subpixel_stem),
}

__all__ = [
    "EXERCISES",
    "check_decoupled_attention",
    "check_linear_vfi",
    "check_noise_prior",
    "check_subpixel_stem",
    "solution_decoupled_attention",
    "solution_linear_vfi",
    "solution_noise_prior",
    "solution_subpixel_stem",
]
