"""Metrics over the oracle's detections: box IoU, AP@0.5, caption/attribute accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..text import parse_shapes_caption
from ..validation import _show, check_boxes, check_finite, check_float, check_strings
from .segment import DetectedObject


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``(N, M)`` of boxes ``a (N,4)`` and ``b (M,4)`` as (x0, y0, x1, y1)."""
    check_boxes("a", a)
    check_boxes("b", b)
    a, b = a.float(), b.float()
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-12)


def average_precision(
    pred_boxes: list[torch.Tensor],
    pred_scores: list[torch.Tensor],
    gt_boxes: list[torch.Tensor],
    iou_threshold: float = 0.5,
) -> float:
    """AP at an IoU threshold over a set of images (all-point interpolation, PASCAL VOC 2010+).

    Each prediction, in descending score order, matches the unmatched ground-truth box of highest IoU in
    its image if that IoU ≥ threshold (a true positive), else it is a false positive."""
    if not (len(pred_boxes) == len(pred_scores) == len(gt_boxes)):
        raise ValueError("pred_boxes, pred_scores and gt_boxes must have one entry per image")
    check_float("iou_threshold", iou_threshold, 0.0, 1.0)
    if iou_threshold == 0.0:
        raise ValueError("iou_threshold must be in (0, 1], got 0.0")
    for i, (pb, ps, gb) in enumerate(zip(pred_boxes, pred_scores, gt_boxes)):
        check_boxes(f"pred_boxes[{i}]", pb)
        check_boxes(f"gt_boxes[{i}]", gb)
        if not isinstance(ps, torch.Tensor) or ps.dim() != 1 or len(ps) != len(pb):
            raise ValueError(
                f"pred_scores[{i}] must be a 1-D tensor with one score per box ({len(pb)}), got {_show(ps)}"
            )
        check_finite(f"pred_scores[{i}]", ps)
    n_gt = sum(len(g) for g in gt_boxes)
    if n_gt == 0:
        raise ValueError("average_precision needs at least one ground-truth box")
    records = []  # (score, image, box)
    for i, (pb, ps) in enumerate(zip(pred_boxes, pred_scores)):
        records += [(float(s), i, pb[j]) for j, s in enumerate(ps)]
    records.sort(key=lambda r: -r[0])
    matched = [torch.zeros(len(g), dtype=torch.bool) for g in gt_boxes]
    tp = torch.zeros(len(records))
    for k, (_, i, box) in enumerate(records):
        if len(gt_boxes[i]) == 0:
            continue
        ious = box_iou(box[None], gt_boxes[i])[0].masked_fill(matched[i], -1.0)
        j = int(ious.argmax())
        if ious[j] >= iou_threshold:
            matched[i][j] = True
            tp[k] = 1
    if len(records) == 0:
        return 0.0
    ctp = tp.cumsum(0)
    recall = ctp / n_gt
    precision = ctp / torch.arange(1, len(records) + 1)
    # all-point interpolation: precision envelope, integrated over recall steps
    mrec = torch.cat([torch.tensor([0.0]), recall, torch.tensor([1.0])])
    mpre = torch.cat([torch.tensor([0.0]), precision, torch.tensor([0.0])])
    mpre = torch.flip(torch.cummax(torch.flip(mpre, [0]), 0).values, [0])
    idx = (mrec[1:] != mrec[:-1]).nonzero().flatten()
    return float(((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]).sum())


@dataclass
class CaptionScore:
    """Per-image agreement between a caption and the detected objects.

    colour: fraction of the caption's objects whose colour is present; shape: fraction whose colour is
    present *and* whose largest component of that colour has the caption's shape; exact: the set of
    well-formed (colour, shape) objects equals the caption's set — no missing and no extra objects."""

    colour: float
    shape: float
    exact: bool
    n_caption: int
    n_detected: int


def score_caption(caption: str, detections: list[DetectedObject]) -> CaptionScore:
    wanted = parse_shapes_caption(caption)
    by_colour: dict[int, DetectedObject] = {}
    for o in detections:  # largest first
        by_colour.setdefault(o.colour, o)
    colour_hits = [c in by_colour for c, _ in wanted]
    shape_hits = [c in by_colour and by_colour[c].shape == s for c, s in wanted]
    found = sorted((o.colour, o.shape) for o in detections if o.well_formed)
    return CaptionScore(
        colour=sum(colour_hits) / len(wanted),
        shape=sum(shape_hits) / len(wanted),
        exact=found == sorted(wanted),
        n_caption=len(wanted),
        n_detected=len(detections),
    )


def caption_accuracy(captions: list[str], detections: list[list[DetectedObject]]) -> dict[str, float]:
    """Mean colour, shape, both-per-object and exact-set accuracy over a batch."""
    check_strings("captions", captions)
    if len(captions) != len(detections):
        raise ValueError(f"{len(captions)} captions but {len(detections)} detection lists")
    scores = [score_caption(c, d) for c, d in zip(captions, detections)]
    n = len(scores)
    return {
        "colour": sum(s.colour for s in scores) / n,
        "shape": sum(s.shape for s in scores) / n,
        "exact": sum(s.exact for s in scores) / n,
    }
