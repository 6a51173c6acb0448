"""Inference as MagicAnimate's released code runs it (``pipelines/pipeline_animation.py``, ``pipelines/context.py``).

- **DDIM** with classifier-free guidance **on appearance**: the conditional half reads the appearance bank, the
  unconditional half runs plain self-attention; the pose residuals are applied in both halves.
  ε̂ = ε̂(no bank) + w · (ε̂(bank) − ε̂(no bank)).
- **The appearance encoder runs once per step**, on the clean reference at that step's t; the bank is shared by
  every window.
- **Long videos by overlapping windows** (§3.4): the N frames are covered by windows of ``window`` frames with
  stride ``window − overlap``; every window is denoised at every step, and each frame's ε̂ is the **average** of
  the windows that contain it (a per-frame sum divided by a per-frame count) before the scheduler steps all N
  frames at once. ``closed_loop=True`` wraps windows modulo N as the released "uniform" context scheduler does;
  the default places the last window flush with the end instead (no wrap-around coupling of the first and last
  frames of a non-periodic motion).
- **Shared initial noise**: one ``window``-frame noise tensor tiled along time, so every segment starts from the
  same noise (the released demo's default), against independent noise per frame.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..diffusion.sampling import ddim_step, to_image_space
from ..diffusion.schedule import make_ddim_scheduler, make_train_scheduler
from ..validation import check_float, check_int
from .models import MagicAnimate


def context_windows(frames: int, window: int, overlap: int, closed_loop: bool = False) -> list[list[int]]:
    """The frame indices of each window covering ``frames`` frames (stride ``window − overlap``).

    >>> context_windows(10, 4, 1)
    [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    """
    frames = check_int("frames", frames, 1, 100_000)
    window = check_int("window", window, 1, 24)
    overlap = check_int("overlap", overlap, 0, 23)
    if overlap >= window:
        raise ValueError(f"overlap must be smaller than the window, got window={window}, overlap={overlap}")
    if window >= frames:
        return [list(range(frames))]
    stride = window - overlap
    if closed_loop:
        return [[(s + k) % frames for k in range(window)] for s in range(0, frames, stride)]
    starts = list(range(0, frames - window + 1, stride))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return [list(range(s, s + window)) for s in starts]


def window_starts(windows: list[list[int]]) -> list[int]:
    """The first frame of every window but the first: where a seam between windows can show."""
    return sorted({w[0] for w in windows[1:]})


def initial_noise(
    batch: int, frames: int, shape: tuple[int, ...], window: int, shared: bool, seed: int
) -> torch.Tensor:
    """x_T ``(B, N, *shape)``: one ``window``-frame tensor tiled along time (``shared``), or i.i.d. per frame."""
    g = torch.Generator().manual_seed(int(seed))
    if not shared:
        return torch.randn((batch, frames, *shape), generator=g)
    base = torch.randn((batch, min(window, frames), *shape), generator=g)
    return base[:, torch.arange(frames) % base.shape[1]]


@torch.no_grad()
def window_eps(
    model: MagicAnimate,
    x: torch.Tensor,
    t: int,
    reference: torch.Tensor | None,
    iuv: torch.Tensor,
    windows: list[list[int]],
    guidance_scale: float,
    pooled: bool = False,
    temporal: bool = True,
) -> torch.Tensor:
    """ε̂ for all N frames: every window denoised (both CFG halves, all windows in one batch), averaged per frame."""
    b, n = x.shape[:2]
    idx = torch.tensor(windows, device=x.device)  # (W, window)
    xw = x[:, idx].flatten(0, 1)  # (B·W, window, ...)
    iw = iuv[:, idx].flatten(0, 1)
    tt = torch.full((xw.shape[0],), t, device=x.device, dtype=torch.long)
    eps_u = model.eps(xw, tt, None, iw, temporal=temporal)
    eps = eps_u
    if reference is not None and guidance_scale != 0:
        bank = model.bank(reference, torch.full((b,), t, device=x.device, dtype=torch.long))
        bank = {k: v.repeat_interleave(len(windows), 0) for k, v in bank.items()}
        eps_c = model.eps(xw, tt, None, iw, bank=bank, pooled=pooled, temporal=temporal)
        eps = eps_u + guidance_scale * (eps_c - eps_u)
    eps = eps.view(b, len(windows), *eps.shape[1:])
    total = torch.zeros_like(x)
    count = torch.zeros(n, device=x.device, dtype=x.dtype)
    for w, frames in enumerate(windows):
        total[:, frames] += eps[:, w]
        count[frames] += 1
    return total / count.view(1, n, *([1] * (x.dim() - 2)))


@torch.no_grad()
def animate(
    model: MagicAnimate,
    reference: torch.Tensor,
    iuv: torch.Tensor,
    *,
    steps: int = 20,
    guidance_scale: float = 2.0,
    window: int = 8,
    overlap: int = 2,
    shared_noise: bool = True,
    closed_loop: bool = False,
    pooled: bool = False,
    temporal: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Animate ``reference (B,3,H,W)`` (model space [−1, 1]) along ``iuv (B,N,3,H,W)``; returns frames in [0, 1].

    ``window``/``overlap``: the context windows (:func:`context_windows`); ``shared_noise``: tiled initial noise;
    ``pooled``: read the bank as one global token (the ablation arm's weights); ``temporal=False``: skip the motion
    modules."""
    if reference.dim() != 4 or iuv.dim() != 5 or iuv.shape[0] != reference.shape[0]:
        raise ValueError(
            f"reference must be (B,3,H,W) and iuv (B,N,3,H,W) with the same B; got {tuple(reference.shape)} and "
            f"{tuple(iuv.shape)}"
        )
    if iuv.shape[2:] != reference.shape[1:]:
        raise ValueError(f"every pose map must have the reference's shape {tuple(reference.shape[1:])}")
    steps = check_int("steps", steps, 1, 1000)
    guidance_scale = check_float("guidance_scale", guidance_scale, 0.0, 50.0)
    windows = context_windows(iuv.shape[1], window, overlap, closed_loop)
    device = next(model.parameters()).device
    reference, iuv = reference.to(device), iuv.to(device)
    x = initial_noise(iuv.shape[0], iuv.shape[1], tuple(iuv.shape[2:]), window, shared_noise, seed).to(device)
    sched = make_ddim_scheduler(make_train_scheduler(), steps, True)
    for t in tqdm(sched.timesteps.tolist(), disable=not progress, desc="animate"):
        eps = window_eps(model, x, t, reference, iuv, windows, guidance_scale, pooled, temporal)
        x = ddim_step(sched, eps, t, x, use_clipped_model_output=True).prev_sample
    return to_image_space(x.float())
