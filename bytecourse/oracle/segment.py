"""Exact measurement of images against the Shapes/Motion rendering rules.

Pipeline: every pixel is explained as *background* (achromatic, at the world's grey level) or as one of the
palette colours (within a tolerance), or left unexplained → per colour, 8-connected components → for each
component its box, centroid, area and the best-fitting shape kind (IoU of the component against a template
drawn by the world's own rasteriser inside the component's box). A component is *well-formed* when that IoU
clears a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..validation import check_images
from ..worlds.render import PALETTE, PLAIN_BACKGROUND, TEXTURE_RANGE


@dataclass(frozen=True)
class OracleConfig:
    """Tolerances. ``colour_tol``: max RGB distance to a palette colour; ``grey_tol``: max channel spread of
    an achromatic pixel; ``level_tol``: slack around the background's grey level(s); ``min_area``: smallest
    component counted as an object; ``shape_iou``: template IoU for a well-formed shape (interior), and
    ``border_shape_iou`` for a shape cut by the frame border (its box does not pin the template down)."""

    textured: bool = False
    colour_tol: float = 0.25
    grey_tol: float = 0.15
    level_tol: float = 0.12
    min_area: int = 6
    shape_iou: float = 0.75
    border_shape_iou: float = 0.5


@dataclass
class DetectedObject:
    colour: int
    shape: int
    box: tuple[float, float, float, float]  # normalised (x0, y0, x1, y1)
    centroid: tuple[float, float]  # normalised (x, y)
    area: int
    shape_score: float  # IoU with the best template
    well_formed: bool
    touches_border: bool


def classify_pixels(images: torch.Tensor, config: OracleConfig = OracleConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """``(colour_index (B,H,W), background (B,H,W) bool)``; colour_index is −1 where no palette colour fits."""
    check_images("images", images)
    x = images.float().clamp(0, 1)
    pal = PALETTE.to(x.device)
    dist = (x[:, None] - pal[None, :, :, None, None]).norm(dim=2)  # (B,P,H,W)
    dmin, idx = dist.min(dim=1)
    colour = torch.where(dmin <= config.colour_tol, idx, -1)
    spread = x.amax(1) - x.amin(1)
    level = x.mean(1)
    if config.textured:
        lo, hi = TEXTURE_RANGE
        in_range = (level >= lo - config.level_tol) & (level <= hi + config.level_tol)
    else:
        in_range = (level - PLAIN_BACKGROUND).abs() <= config.level_tol
    background = (spread <= config.grey_tol) & in_range & (colour < 0)
    return colour, background


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected component labels of boolean ``mask (N,H,W)``: 0 outside, a positive id per component
    (the largest flat pixel index + 1 inside it). Label propagation by max-pooling until nothing changes."""
    n, h, w = mask.shape
    ids = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.float32).view(1, h, w).expand(n, h, w)
    labels = torch.where(mask, ids, torch.zeros_like(ids))
    m = mask.float()
    for _ in range(h * w):
        new = F.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0] * m
        if torch.equal(new, labels):
            break
        labels = new
    return labels.long()


def detect_objects(images: torch.Tensor, config: OracleConfig = OracleConfig()) -> list[list[DetectedObject]]:
    """Objects found in each image ``(B, 3, H, W)`` in [0, 1], largest first."""
    check_images("images", images)
    b, _, h, w = images.shape
    colour, _ = classify_pixels(images, config)
    planes = colour[:, None] == torch.arange(len(PALETTE), device=colour.device)[None, :, None, None]  # (B,P,H,W)
    labels = connected_components(planes.flatten(0, 1)).view(b, len(PALETTE), h, w)
    comps = _component_stats(labels, config)
    out: list[list[DetectedObject]] = [[] for _ in range(b)]
    for c in comps:
        c.pop("label")
        out[c.pop("image")].append(DetectedObject(**c))
    for objs in out:
        objs.sort(key=lambda o: -o.area)
    return out


def _component_stats(labels: torch.Tensor, config: OracleConfig) -> list[dict]:
    b, p, h, w = labels.shape
    flat = labels.flatten(2)  # (B,P,HW)
    key = (torch.arange(b * p, device=labels.device).view(b, p, 1) * (h * w + 1) + flat)[flat > 0]
    if key.numel() == 0:
        return []
    uniq, inv, area = torch.unique(key, return_inverse=True, return_counts=True)
    keep = area >= config.min_area
    plane = uniq // (h * w + 1)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=labels.device), torch.arange(w, device=labels.device), indexing="ij"
    )
    pos_mask = flat > 0
    px = xs.flatten().expand(b, p, h * w)[pos_mask].float()
    py = ys.flatten().expand(b, p, h * w)[pos_mask].float()
    n = uniq.numel()
    big = float(h + w)
    x0 = torch.full((n,), big).scatter_reduce(0, inv, px, "amin")
    x1 = torch.full((n,), -1.0).scatter_reduce(0, inv, px, "amax") + 1
    y0 = torch.full((n,), big).scatter_reduce(0, inv, py, "amin")
    y1 = torch.full((n,), -1.0).scatter_reduce(0, inv, py, "amax") + 1
    cx = torch.zeros(n).index_add(0, inv, px + 0.5) / area
    cy = torch.zeros(n).index_add(0, inv, py + 0.5) / area
    idx = keep.nonzero().flatten()
    if idx.numel() == 0:
        return []
    # shape fit: IoU of each component against each kind's template inscribed in the component's box
    comp_mask = labels.flatten(0, 1)[plane[idx]] == (uniq[idx] % (h * w + 1))[:, None, None]  # (C,H,W)
    boxes_px = torch.stack([x0[idx], y0[idx], x1[idx], y1[idx]], -1)
    iou = torch.zeros(len(idx), 3)
    for shrink in (0.0, 0.25, 0.5):
        tmpl = box_templates(boxes_px, h, w, shrink)  # (C,K,H,W)
        inter = (tmpl & comp_mask[:, None]).flatten(2).sum(-1).float()
        union = (tmpl | comp_mask[:, None]).flatten(2).sum(-1).float()
        iou = torch.maximum(iou, inter / union.clamp(min=1))
    bw, bh = boxes_px[:, 2] - boxes_px[:, 0], boxes_px[:, 3] - boxes_px[:, 1]
    squarish = (bw - bh).abs() <= torch.clamp(0.25 * torch.maximum(bw, bh), min=2.0)
    iou = iou * squarish[:, None]  # the world only draws shapes with (nearly) square boxes
    score, best = iou.max(dim=1)
    border = (x0[idx] == 0) | (y0[idx] == 0) | (x1[idx] == w) | (y1[idx] == h)
    thr = torch.where(border, config.border_shape_iou, config.shape_iou)
    well = score >= thr
    rows = []
    for j, i in enumerate(idx.tolist()):
        pl = int(plane[i])
        rows.append(
            dict(
                image=pl // p,
                colour=pl % p,
                label=int(uniq[i] % (h * w + 1)),
                shape=int(best[j]),
                box=(float(x0[i]) / w, float(y0[i]) / h, float(x1[i]) / w, float(y1[i]) / h),
                centroid=(float(cx[i]) / w, float(cy[i]) / h),
                area=int(area[i]),
                shape_score=float(score[j]),
                well_formed=bool(well[j]),
                touches_border=bool(border[j]),
            )
        )
    return rows


def box_templates(boxes_px: torch.Tensor, height: int, width: int, shrink: float = 0.0) -> torch.Tensor:
    """Each shape kind inscribed in each box ``(C, 4)`` (pixel units, x1/y1 exclusive) → ``(C, K, H, W)``.

    In box-normalised coordinates (u, v) ∈ [−1, 1]²: circle u² + v² ≤ 1, square |u|, |v| ≤ 1, triangle
    |u| ≤ (v + 1)/2 — the world's three shapes, stretched to the box, tested at pixel centres. ``shrink``
    (pixels) pulls the half-extents in: a rasterised shape's box is up to half a pixel wider on each side than
    the shape itself, because a pixel counts when its centre is inside."""
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = (boxes_px[:, i, None, None] for i in range(4))
    u = (xs[None, None, :] - (x0 + x1) / 2) / ((x1 - x0) / 2 - shrink)
    v = (ys[None, :, None] - (y0 + y1) / 2) / ((y1 - y0) / 2 - shrink)
    circle = u * u + v * v <= 1
    square = (u.abs() <= 1) & (v.abs() <= 1)
    triangle = (v >= -1) & (v <= 1) & (u.abs() <= (v + 1) / 2)
    return torch.stack([circle, square, triangle], dim=1)


def realism(images: torch.Tensor, config: OracleConfig = OracleConfig()) -> torch.Tensor:
    """Fraction of pixels ``(B,)`` that the world's rendering rules explain: background pixels that fit the
    background, plus pixels of palette-coloured components that are well-formed shapes. 1.0 on the world's
    own images; speckle, off-palette colours and malformed blobs lower it."""
    check_images("images", images)
    b, _, h, w = images.shape
    colour, background = classify_pixels(images, config)
    planes = colour[:, None] == torch.arange(len(PALETTE), device=colour.device)[None, :, None, None]
    labels = connected_components(planes.flatten(0, 1)).view(b, len(PALETTE), h, w)
    explained = background.clone()
    for c in _component_stats(labels, config):
        if c["well_formed"]:
            explained[c["image"]] |= labels[c["image"], c["colour"]] == c["label"]
    return explained.flatten(1).float().mean(1)
