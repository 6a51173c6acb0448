"""Chapter 04 — Boximator (arXiv 2402.01566): box and trajectory control for a frozen video diffusion model.

- :mod:`.boxes`: box constraints (slots, ID colours, border lines, soft boxes, interpolation, relaxation,
  motion paths, self-tracking outlines);
- :mod:`.control`: Fourier box tokens and the gated per-frame box self-attention layer;
- :mod:`.pipeline`: the controlled model, the staged training step, guided sampling with F0;
- :mod:`.train`: the variants' training commands (``python -m bytecourse train boximator``);
- :mod:`.evaluate`: the paper's evaluation protocol, its numbers and the verdicts (``eval boximator``);
- :mod:`.editor`: the box-trajectory editor widget.
"""

from .boxes import (
    ID_COLOURS,
    SLOTS,
    BoxConditions,
    draw_outlines,
    empty_conditions,
    interpolate_keyframes,
    motion_path,
    relax,
    request,
    soften,
    to_frame,
)
from .control import BoximatorControl, BoxSelfAttention, BoxTokenEncoder, FourierEmbedder
from .pipeline import BoximatorModel, StageConfig, control_loss, generate_video

__all__ = [
    "ID_COLOURS",
    "SLOTS",
    "BoxConditions",
    "BoxSelfAttention",
    "BoxTokenEncoder",
    "BoximatorControl",
    "BoximatorModel",
    "FourierEmbedder",
    "StageConfig",
    "control_loss",
    "draw_outlines",
    "empty_conditions",
    "generate_video",
    "interpolate_keyframes",
    "motion_path",
    "relax",
    "request",
    "soften",
    "to_frame",
]
