"""A cartoon face drawn from the Talking world's coefficients — the toy stand-in for DREAM-Talk's blendshape rig.

Vectorised torch: every frame is drawn at once from signed-distance-like masks on a pixel grid, so a 40-frame clip
renders in milliseconds. Head pose moves the whole face (roll rotates it, yaw and pitch shift the features), the
eyes open and close with ``eye_open`` (blinks), the brows rise with ``brow_raise`` and tilt inwards with
``brow_furrow``, the cheeks blush with ``cheek_raise``, and the mouth opens with ``jaw_open``, widens with
``lip_width``, narrows with ``lip_round`` and curves up or down with ``mouth_corner``.
"""

from __future__ import annotations

import torch

from ..worlds.talking import COEFFICIENTS

_I = {name: i for i, name in enumerate(COEFFICIENTS)}
_BG = torch.tensor([0.86, 0.89, 0.93])
_SKIN = torch.tensor([0.98, 0.83, 0.68])
_DARK = torch.tensor([0.15, 0.1, 0.1])
_LIP = torch.tensor([0.78, 0.25, 0.3])
_INSIDE = torch.tensor([0.35, 0.05, 0.08])
_CHEEK = torch.tensor([0.95, 0.55, 0.55])
_WHITE = torch.tensor([1.0, 1.0, 1.0])


def _paint(img: torch.Tensor, mask: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Alpha-blend ``colour`` into img (T,3,H,W) where mask (T,H,W) ∈ [0, 1]."""
    m = mask[:, None]
    return img * (1 - m) + colour.view(1, 3, 1, 1) * m


def _soft(d: torch.Tensor, px: float) -> torch.Tensor:
    """Coverage of a region {d < 0} with a one-pixel anti-aliased edge."""
    return (0.5 - d / px).clamp(0, 1)


def _segment_distance(x, y, x0, y0, x1, y1):
    dx, dy = x1 - x0, y1 - y0
    t = (((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-9)).clamp(0, 1)
    return ((x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2).sqrt()


def render_faces(coeffs: torch.Tensor, size: int = 64) -> torch.Tensor:
    """``coeffs`` (T, D) → frames (T, 3, size, size) in [0, 1]."""
    if coeffs.dim() != 2 or coeffs.shape[1] != len(COEFFICIENTS):
        raise ValueError(f"coeffs must be (T, {len(COEFFICIENTS)}), got {tuple(coeffs.shape)}")
    c = {k: coeffs[:, i].float().view(-1, 1, 1) for k, i in _I.items()}
    frames = coeffs.shape[0]
    px = 2.0 / size
    lin = torch.linspace(-1 + px / 2, 1 - px / 2, size)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    gx, gy = gx.expand(frames, -1, -1), gy.expand(frames, -1, -1)
    # head pose: roll rotates the face about its centre; yaw and pitch shift the features
    ang = 0.8 * c["roll"]
    x = torch.cos(ang) * gx + torch.sin(ang) * gy
    y = -torch.sin(ang) * gx + torch.cos(ang) * gy
    sx, sy = 0.45 * c["yaw"], 0.35 * c["pitch"]
    img = _BG.view(1, 3, 1, 1).expand(frames, 3, size, size).clone()
    face = ((x - 0.25 * sx) / 0.74) ** 2 + ((y - 0.05 + 0.2 * sy) / 0.88) ** 2 - 1
    img = _paint(img, _soft(face * 0.7, px), _SKIN)
    fx, fy = x - sx, y + sy  # feature coordinates
    # cheeks
    for side in (-1, 1):
        d = ((fx - side * 0.42) ** 2 + (fy - 0.2) ** 2).sqrt() - 0.13
        img = _paint(img, _soft(d, px) * 0.6 * c["cheek_raise"].clamp(0, 1), _CHEEK)
    # eyes (whites, pupils clipped to the opening) and brows
    open_ = (0.09 * (1 + 0.7 * c["eye_open"])).clamp(min=0.004)
    for side in (-1, 1):
        ex, ey = side * 0.3, -0.14
        white = ((fx - ex) / 0.14) ** 2 + ((fy - ey) / open_) ** 2 - 1
        img = _paint(img, _soft(white * 0.12, px), _WHITE)
        pupil = ((fx - ex) ** 2 + (fy - ey) ** 2).sqrt() - 0.055
        img = _paint(img, _soft(pupil, px) * _soft(white * 0.12, px), _DARK)
        lid = (white * 0.12).abs() - 0.012
        img = _paint(img, _soft(lid, px), _DARK * 2)
        by = -0.34 - 0.14 * c["brow_raise"]
        inner, outer = by + 0.1 * c["brow_furrow"], by - 0.03 * c["brow_furrow"]
        d = _segment_distance(fx, fy, ex - side * 0.15, inner, ex + side * 0.15, outer) - 0.03
        img = _paint(img, _soft(d, px), _DARK)
    # mouth: an opening between two lip curves, bent by the corners
    w = 0.21 * (1 + 0.45 * c["lip_width"] - 0.35 * c["lip_round"]).clamp(min=0.35)
    h = 0.015 + 0.17 * c["jaw_open"].clamp(min=0)
    mx, my = fx, fy - 0.47
    u = (mx / w).clamp(-1, 1)
    bend = -0.09 * c["mouth_corner"] * u**2 + 0.045 * c["mouth_corner"]
    arc = (1 - u**2).clamp(min=0).sqrt()
    top, bottom = bend - h * arc, bend + h * arc * (1 + 0.3 * c["lip_round"])
    inside_x = mx.abs() - w
    lips_d = torch.maximum(inside_x, torch.maximum(top - 0.03 - my, my - bottom - 0.03))
    img = _paint(img, _soft(lips_d, px), _LIP)
    open_d = torch.maximum(inside_x + 0.02, torch.maximum(top - my, my - bottom))
    img = _paint(img, _soft(open_d, px) * (h > 0.025).float(), _INSIDE)
    return img.clamp(0, 1)


def coefficient_curves(ax, series: dict[str, torch.Tensor], names: tuple[str, ...], title: str = "") -> None:
    """Plot the named coefficients of each labelled sequence (T, D) on ``ax``; the first series is drawn dashed."""
    styles = ["--", "-", ":", "-."]
    for k, (label, seq) in enumerate(series.items()):
        for j, name in enumerate(names):
            ax.plot(
                seq[:, _I[name]].numpy(),
                styles[k % len(styles)],
                color=f"C{j}",
                lw=1.2 if k else 1.0,
                alpha=0.8 if k else 0.6,
                label=f"{name} · {label}",
            )
    ax.set_xlabel("frame")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=2)


__all__ = ["coefficient_curves", "render_faces"]
