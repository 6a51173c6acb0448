"""Chapter 03's evaluation: the paper's metrics on held-out perception images, every arm over its training seeds.

- **Segmentation**: mIoU — per class, |pred ∩ truth| / |pred ∪ truth| summed over all held-out pixels, then the mean
  over the classes (background included, as ADE20K's and Cityscapes' protocols include every class).
- **Depth** (NYUv2's protocol): RMSE = √mean (d̂ − d)², δ1 = the share of pixels with max(d̂/d, d/d̂) < 1.25, and
  REL = mean |d̂ − d| / d. Depths are the world's, in (0, 1] (the background ramp runs to 1).

Held-out images: :data:`EVAL_IMAGES` drawn from ``seeds.METAPROMPTS_EVAL`` — no training batch is among them.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .. import seeds
from ..worlds import ShapesConfig, make_shapes
from .models import LABEL_SETS

EVAL_IMAGES = 512
EVAL_BATCH = 64


@lru_cache(maxsize=4)
def held_out(labels: str = "shape", n: int = EVAL_IMAGES) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (n,3,H,W), labels (n,H,W) and depth (n,H,W) of the held-out perception images."""
    from .train import labels_of

    parts = [
        make_shapes(min(EVAL_BATCH, n - i), seeds.METAPROMPTS_EVAL + i // EVAL_BATCH, ShapesConfig.perception())
        for i in range(0, n, EVAL_BATCH)
    ]
    return (
        torch.cat([b.images for b in parts]),
        torch.cat([labels_of(b, labels) for b in parts]),
        torch.cat([b.depth for b in parts]),
    )


def confusion(pred: torch.Tensor, truth: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) counts, rows = truth."""
    idx = truth.flatten().long() * classes + pred.flatten().long()
    return torch.bincount(idx, minlength=classes * classes).view(classes, classes)


def iou_from_confusion(conf: torch.Tensor) -> torch.Tensor:
    """Per-class IoU (NaN for a class absent from both prediction and truth)."""
    inter = conf.diag().double()
    union = conf.sum(0).double() + conf.sum(1).double() - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))


def depth_metrics(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    valid = truth > 0
    p, t = pred[valid].double().clamp(min=1e-6), truth[valid].double()
    ratio = torch.maximum(p / t, t / p)
    return {
        "rmse": float((p - t).pow(2).mean().sqrt()),
        "delta1": float((ratio < 1.25).double().mean()),
        "rel": float(((p - t).abs() / t).mean()),
    }


@torch.no_grad()
def predict(model, images: torch.Tensor, loops: int | None = None) -> dict[str, torch.Tensor]:
    """Class map and depth for ``images`` in batches (on the model's device)."""
    device = next(model.parameters()).device
    out: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(images), EVAL_BATCH):
        o = model(images[i : i + EVAL_BATCH].to(device), loops)
        if "logits" in o:
            out.setdefault("classes", []).append(o["logits"].argmax(1).cpu())
        if "depth" in o:
            out.setdefault("depth", []).append(o["depth"].float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def evaluate_model(model, data, loops: int | None = None) -> dict[str, float]:
    """mIoU, per-class IoU, RMSE, δ1 and REL of ``model`` on ``data = (images, labels, depth)``."""
    images, labels, depth = data
    pred = predict(model, images, loops)
    metrics: dict[str, float] = {}
    if "classes" in pred:
        classes = LABEL_SETS[model.config.labels]
        iou = iou_from_confusion(confusion(pred["classes"], labels, classes))
        metrics["miou"] = float(iou.nanmean())
        metrics |= {f"iou_{i}": float(v) for i, v in enumerate(iou.tolist())}
    if "depth" in pred:
        metrics |= depth_metrics(pred["depth"], depth)
    return metrics
