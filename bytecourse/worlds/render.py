"""Exact rasterisation shared by the worlds and the oracle.

Shapes are hard-edged (no anti-aliasing): a pixel whose centre lies inside the shape takes the object's
palette colour exactly. That makes colour segmentation exact on the worlds' own images and gives the
oracle a crisp definition of a "well-formed" shape.
"""

from __future__ import annotations

import torch

from ..text import COLOUR_NAMES, SHAPE_NAMES

#: RGB palette in [0, 1], one row per colour in :data:`bytecourse.text.COLOUR_NAMES`.
PALETTE = torch.tensor(
    [
        [0.90, 0.15, 0.15],  # red
        [0.15, 0.75, 0.20],  # green
        [0.15, 0.30, 0.95],  # blue
        [0.95, 0.85, 0.10],  # yellow
        [0.85, 0.20, 0.85],  # magenta
        [0.10, 0.85, 0.90],  # cyan
    ]
)
assert PALETTE.shape[0] == len(COLOUR_NAMES)
NUM_COLOURS = len(COLOUR_NAMES)
NUM_SHAPES = len(SHAPE_NAMES)
CIRCLE, SQUARE, TRIANGLE = 0, 1, 2

#: Plain background grey level, and the range a textured background stays inside (achromatic).
PLAIN_BACKGROUND = 0.20
TEXTURE_RANGE = (0.10, 0.40)


def pixel_grid(height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``(ys, xs)``, each ``(H, W)``, in pixel units."""
    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    return torch.meshgrid(ys, xs, indexing="ij")


def shape_masks(
    centers: torch.Tensor, radii: torch.Tensor, kinds: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Boolean masks ``(..., H, W)`` for shapes with ``centers (..., 2)`` as (x, y) in pixels,
    ``radii (...)`` (half the side of the bounding square) and ``kinds (...)``.

    circle: ‖p − c‖ ≤ r; square: ‖p − c‖_∞ ≤ r; triangle: apex at (cx, cy − r), base on y = cy + r,
    half-width (y − cy + r)/2 — an upward isosceles triangle that fills its 2r × 2r box's width at the base.
    """
    ys, xs = pixel_grid(height, width, centers.device)
    cx = centers[..., 0, None, None]
    cy = centers[..., 1, None, None]
    r = radii[..., None, None]
    dx = xs - cx
    dy = ys - cy
    circle = dx * dx + dy * dy <= r * r
    square = (dx.abs() <= r) & (dy.abs() <= r)
    triangle = (dy >= -r) & (dy <= r) & (dx.abs() <= (dy + r) / 2)
    k = kinds[..., None, None]
    return torch.where(k == CIRCLE, circle, torch.where(k == SQUARE, square, triangle))


def masks_to_boxes(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight boxes ``(..., 4)`` as normalised (x0, y0, x1, y1) of boolean ``masks (..., H, W)``,
    and a ``(...)`` flag of non-empty masks. Empty masks give an all-zero box."""
    height, width = masks.shape[-2:]
    any_x = masks.any(dim=-2)  # (..., W)
    any_y = masks.any(dim=-1)  # (..., H)
    nonempty = any_x.any(dim=-1)
    ar_x = torch.arange(width, device=masks.device)
    ar_y = torch.arange(height, device=masks.device)
    big = 10**6
    x0 = torch.where(any_x, ar_x, big).amin(-1)
    x1 = torch.where(any_x, ar_x, -1).amax(-1) + 1
    y0 = torch.where(any_y, ar_y, big).amin(-1)
    y1 = torch.where(any_y, ar_y, -1).amax(-1) + 1
    boxes = torch.stack([x0 / width, y0 / height, x1 / width, y1 / height], dim=-1).float()
    return torch.where(nonempty[..., None], boxes, torch.zeros_like(boxes)), nonempty


def chromatic_background(batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A coloured texture ``(B, 3, H, W)`` (the perception setting): two random hues at moderate saturation,
    mixed by stripes of random orientation and frequency, a checker and a smooth ramp. Its colours overlap the
    palette's hues (a red-brown stripe beside a red object), so no per-pixel colour rule separates objects from
    it; its saturation (≤ 0.55) and value (≤ 0.6) stay below the palette's, so the objects remain visible."""
    ys, xs = pixel_grid(height, width)
    u = torch.rand(batch, 9, generator=generator)

    def hue_rgb(h: torch.Tensor, sat: torch.Tensor, val: torch.Tensor) -> torch.Tensor:  # HSV → RGB, (B, 3)
        k = (torch.tensor([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6
        return val[:, None] * (1 - sat[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1)))

    a = hue_rgb(u[:, 0], 0.25 + 0.3 * u[:, 1], 0.3 + 0.3 * u[:, 2])
    b = hue_rgb(u[:, 3], 0.25 + 0.3 * u[:, 4], 0.2 + 0.3 * u[:, 5])
    angle, freq = u[:, 6] * torch.pi, 0.2 + 0.6 * u[:, 7]
    proj = xs * torch.cos(angle)[:, None, None] + ys * torch.sin(angle)[:, None, None]
    mix = 0.5 + 0.5 * torch.sin(proj * freq[:, None, None])  # (B, H, W) in [0, 1]
    checker = ((xs // 4 + ys // 4) % 2)[None] * (u[:, 8, None, None] > 0.5)
    ramp = 0.85 + 0.3 * (ys / height)[None]  # brighter towards the bottom (the nearer ground)
    tex = (a[:, :, None, None] * mix[:, None] + b[:, :, None, None] * (1 - mix[:, None])) * ramp[:, None]
    return (tex + 0.04 * checker[:, None]).clamp(0, 1).contiguous()


def background(
    batch: int, height: int, width: int, textured: bool, generator: torch.Generator, chromatic: bool = False
) -> torch.Tensor:
    """Background ``(B, 3, H, W)``: plain grey, or an achromatic texture (stripes + checker at a random
    grey level and orientation) that stays inside :data:`TEXTURE_RANGE`, or (``chromatic``) a coloured one,
    :func:`chromatic_background`."""
    if chromatic:
        return chromatic_background(batch, height, width, generator)
    if not textured:
        return torch.full((batch, 3, height, width), PLAIN_BACKGROUND)
    lo, hi = TEXTURE_RANGE
    ys, xs = pixel_grid(height, width)
    u = torch.rand(batch, 4, generator=generator)
    level = lo + 0.05 + (hi - lo - 0.1) * u[:, 0]
    angle = u[:, 1] * torch.pi
    freq = 0.3 + 0.5 * u[:, 2]
    proj = xs * torch.cos(angle)[:, None, None] + ys * torch.sin(angle)[:, None, None]
    stripes = torch.sin(proj * freq[:, None, None])
    checker = ((xs // 4 + ys // 4) % 2)[None] * 2 - 1
    tex = level[:, None, None] + 0.03 * stripes + 0.015 * checker * (u[:, 3, None, None] > 0.5)
    return tex.clamp(lo, hi)[:, None].expand(batch, 3, height, width).contiguous()


def composite(
    bg: torch.Tensor,
    masks: torch.Tensor,
    colours: torch.Tensor,
    depths: torch.Tensor,
    bg_depth: torch.Tensor,
    rgb: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paint objects far-to-near (painter's algorithm).

    Args: ``bg (B,3,H,W)``, ``masks (B,K,H,W)`` (absent objects all False), ``colours (B,K)``,
    ``depths (B,K)`` (smaller is nearer), ``bg_depth (H,W)``; ``rgb (B,K,3)`` paints each object in its own
    colour instead of its palette colour (colour jitter).
    Returns image, visible instance masks ``(B,K,H,W)``, depth map ``(B,H,W)``, owner index ``(B,H,W)``
    (−1 for background).
    """
    batch, k = masks.shape[:2]
    image = bg.clone()
    depth = bg_depth.expand(batch, *bg_depth.shape).clone()
    owner = torch.full(depth.shape, -1, dtype=torch.long)
    order = torch.argsort(depths, dim=1, descending=True)
    bidx = torch.arange(batch)
    for j in range(k):
        obj = order[:, j]
        m = masks[bidx, obj]  # (B,H,W)
        paint = PALETTE[colours[bidx, obj]] if rgb is None else rgb[bidx, obj]  # (B,3)
        image = torch.where(m[:, None], paint[:, :, None, None], image)
        depth = torch.where(m, depths[bidx, obj][:, None, None], depth)
        owner = torch.where(m, obj[:, None, None], owner)
    visible = owner[:, None] == torch.arange(k)[None, :, None, None]
    return image, visible, depth, owner


def background_depth(height: int, width: int) -> torch.Tensor:
    """A ground plane seen from above: depth 1.0 at the top row, 0.6 at the bottom (objects are nearer)."""
    ys, _ = pixel_grid(height, width)
    return 1.0 - 0.4 * ys / height
