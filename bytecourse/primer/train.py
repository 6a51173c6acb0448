"""Chapter 00's training command: ``python -m bytecourse train primer``.

Trains the caption-conditioned Shapes image model (DDPM ε-loss with CFG condition dropout; resumable, ≤45 min per
command on a 2-core CPU) and ships its EMA weights as ``data/primer_unet.safetensors`` — the image model every
later chapter loads through :func:`bytecourse.diffusion.image_model.load_image_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from ..diffusion.image_model import CHECKPOINT
from ..diffusion.sampling import to_model_space
from ..diffusion.training import DiffusionTrainingConfig, train_diffusion_model
from ..diffusion.unet import ImageDenoiser, UNetConfig
from ..trainer import quick_run
from ..worlds import ShapesConfig, make_shapes


@dataclass
class PrimerConfig(DiffusionTrainingConfig):
    """Toy defaults (the shipped run). More objects are rarer so one-object captions are learnt first."""

    model_class: ClassVar[type] = ImageDenoiser
    unet: UNetConfig = field(default_factory=UNetConfig)
    object_probs: tuple[float, ...] = (0.5, 0.3, 0.2)
    steps: int = 7000
    batch: int = 64
    lr: float = 6e-4

    def world(self) -> ShapesConfig:
        return ShapesConfig(
            size=self.unet.image_size, object_probs=self.object_probs, caption_length=self.unet.caption_length
        )

    def draw(self, data_seed: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        images = make_shapes(self.batch, data_seed, self.world())
        return to_model_space(images.images), images.tokens


def train_primer(
    config: PrimerConfig, *, run_dir: Path = Path("runs/primer"), **options
) -> tuple[ImageDenoiser, dict]:
    """Train (or continue) the primer model and ship its EMA weights when the schedule completes (``ship=False``:
    don't); :func:`~bytecourse.diffusion.training.train_diffusion_model` does the work."""
    return train_diffusion_model(config, target="primer", checkpoint=CHECKPOINT, run_dir=run_dir, **options)


def quick_train_primer(steps: int = 150, seed: int = 0, device: str = "auto", progress: bool = True):
    """A short live run of the same training code (the notebook's *Train* section and its fallback when the shipped
    checkpoint is missing): :func:`~bytecourse.trainer.quick_run`. Returns the EMA model and the summary."""
    config = PrimerConfig(steps=steps, seed=seed, warmup=min(50, steps))
    return quick_run(train_primer, config, device=device, progress=progress)


def cli_train(options) -> dict:
    config = PrimerConfig(seed=options.seed)
    if options.steps is not None:
        config.steps = options.steps
    _, summary = train_primer(config, device=options.device, resume=options.resume, max_minutes=options.max_minutes)
    return summary
