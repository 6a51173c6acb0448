"""The exact oracle: turns images back into objects (colour, shape, box, centroid) and measures them."""

from .metrics import CaptionScore, average_precision, box_iou, caption_accuracy, score_caption
from .segment import (
    DetectedObject,
    OracleConfig,
    box_templates,
    classify_pixels,
    connected_components,
    detect_objects,
    realism,
)

__all__ = [
    "CaptionScore",
    "DetectedObject",
    "OracleConfig",
    "average_precision",
    "box_iou",
    "box_templates",
    "caption_accuracy",
    "classify_pixels",
    "connected_components",
    "detect_objects",
    "realism",
    "score_caption",
]
