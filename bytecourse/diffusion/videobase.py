"""The shared base video model: a caption-conditioned video DDPM on the Motion world (8 frames, 32×32).

``python -m bytecourse train video`` trains it (resumable stages of ≤45 min on a 2-core CPU: pass
``--max-minutes 44`` and then ``--resume``) and ships the EMA weights as ``data/video_unet.safetensors``.
**Retired**: the course's video model is now the inflated primer (:mod:`.videomotion`); once Boximator moved onto
it, this model's weights left ``data/``, and ``eval video`` carries its measured rows from the stored tables as the
comparison (:func:`~bytecourse.diffusion.video_eval.retired_scratch_rows`). :func:`load_video_model` loads a
retrained copy. The architecture is
:class:`~bytecourse.diffusion.video.VideoDenoiser`: per-frame convolutions, spatial self-attention, caption
cross-attention and temporal attention in every transformer block, as in ModelScope/AnimateDiff-style
video UNets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from .. import checkpoints
from ..worlds.motion import MotionConfig, make_motion
from .sampling import to_model_space
from .training import DiffusionTrainingConfig, train_diffusion_model
from .video import VideoDenoiser, VideoUNetConfig

CHECKPOINT = "video_unet"


@dataclass
class VideoBaseConfig(DiffusionTrainingConfig):
    """Toy defaults (the shipped run): one or two objects per clip, every Motion kind, plain background."""

    model_class: ClassVar[type] = VideoDenoiser
    unet: VideoUNetConfig = field(default_factory=VideoUNetConfig)
    max_objects: int = 2
    object_probs: tuple[float, ...] = (0.6, 0.4)
    steps: int = 4000

    def world(self) -> MotionConfig:
        return MotionConfig(
            frames=self.unet.frames,
            size=self.unet.image_size,
            max_objects=self.max_objects,
            object_probs=self.object_probs,
            caption_length=self.unet.caption_length,
        )

    def draw(self, data_seed: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        clips = make_motion(self.batch, data_seed, self.world())
        return to_model_space(clips.videos), clips.tokens


def train_video_model(
    config: VideoBaseConfig, *, run_dir: Path = Path("runs/video"), **options
) -> tuple[VideoDenoiser, dict]:
    """Train (or continue) the from-scratch video model; ship its EMA weights when the schedule completes."""
    return train_diffusion_model(config, target="video", checkpoint=CHECKPOINT, run_dir=run_dir, **options)


def load_video_model(device: str | torch.device = "cpu") -> tuple[VideoDenoiser, VideoBaseConfig]:
    """The shipped base video model (hash-verified, frozen, eval mode) and its training config."""
    state, entry = checkpoints.load_checkpoint(CHECKPOINT)
    config = VideoBaseConfig.from_dict(entry["config"])
    model = VideoDenoiser(config.unet)
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False), config


def quick_train_video_model(
    steps: int = 60, seed: int = 0, device: str = "auto", progress: bool = True
) -> tuple[VideoDenoiser, dict]:
    """A short live run of the same training code (a fallback when the checkpoint is missing)."""
    import tempfile

    config = VideoBaseConfig(steps=steps, seed=seed, warmup=min(50, steps), batch=8)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        model, summary = train_video_model(config, device=device, run_dir=Path(tmp), ship=False, progress=progress)
    return model.eval().requires_grad_(False), summary | {"seconds": time.time() - t0}


def cli_train(options) -> dict:
    config = VideoBaseConfig(seed=options.seed)
    if options.steps is not None:
        config.steps = options.steps
    _, summary = train_video_model(
        config, device=options.device, resume=options.resume, max_minutes=options.max_minutes
    )
    return summary
