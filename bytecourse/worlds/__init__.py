"""Procedural, seeded worlds with exact ground truth."""

from .motion import MotionBatch, MotionConfig, make_motion
from .render import PALETTE, PLAIN_BACKGROUND, TEXTURE_RANGE, masks_to_boxes, shape_masks
from .shapes import ShapesBatch, ShapesConfig, make_shapes

__all__ = [
    "PALETTE",
    "PLAIN_BACKGROUND",
    "TEXTURE_RANGE",
    "MotionBatch",
    "MotionConfig",
    "ShapesBatch",
    "ShapesConfig",
    "make_motion",
    "make_shapes",
    "masks_to_boxes",
    "shape_masks",
]
