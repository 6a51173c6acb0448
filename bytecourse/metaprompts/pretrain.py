"""Chapter 03, step 0: the course's text-to-image model learns the perception images (``train metaprompts --stage 1``).

Meta Prompts reads its features out of Stable Diffusion, a model that has seen images like the ones it is asked to
perceive. The primer's model has only seen the default Shapes world (grey textures, separate saturated objects), so
the chapter first fine-tunes it as a *diffusion model* on the perception setting
(:meth:`~bytecourse.worlds.ShapesConfig.perception`: chromatic textures, colour jitter, noise, occlusion, depth cue),
with the primer's own ε-loss and captions — the brief's §3.5 ("pre-train a caption-conditioned diffusion model on
these images, so that cross-attention means something"). No label is used here.

The fine-tune is a LoRA delta (:func:`~bytecourse.diffusion.lora.add_lora`, rank 8, on every conv and linear layer
of the UNet; the caption encoder is left as it is) so it ships in the chapter's share as ``metaprompts_pretrain``
(its parent's sha256 in the entry); :func:`load_pretrained_unet` folds it into the primer's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import checkpoints, seeds
from ..configs import JSONConfig
from ..diffusion.image_model import CHECKPOINT as PRIMER_CHECKPOINT
from ..diffusion.image_model import load_image_model
from ..diffusion.lora import add_lora, merge_lora
from ..diffusion.sampling import to_model_space
from ..diffusion.schedule import make_train_scheduler
from ..diffusion.training import seeded_diffusion_loss
from ..diffusion.unet import ImageDenoiser, UNetConfig
from ..trainer import seeded_init, train_and_ship
from ..worlds import ShapesConfig, make_shapes

CHECKPOINT = "metaprompts_pretrain"


@dataclass(frozen=True)
class PretrainConfig(JSONConfig):
    lora_rank: int = 8
    steps: int = 2500
    batch: int = 32
    lr: float = 5e-4
    warmup: int = 100
    ema_decay: float = 0.998
    p_uncond: float = 0.1
    seed: int = 0

    def world(self, image_size: int = 32, caption_length: int = 12) -> ShapesConfig:
        return ShapesConfig.perception(size=image_size, caption_length=caption_length)


class LoRAUNet(nn.Module):
    """The primer's UNet (frozen) with a LoRA delta on every conv and linear layer outside the caption encoder."""

    def __init__(self, unet: ImageDenoiser, rank: int):
        super().__init__()
        self.unet = unet.requires_grad_(False)
        self.lora = add_lora(unet, rank, skip=("text",))

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.unet(*args, **kwargs)

    def merged(self) -> ImageDenoiser:
        return merge_lora(self.unet, self.lora)


def pretrain(
    config: PretrainConfig = PretrainConfig(),
    *,
    run_dir: Path = Path("runs/metaprompts/pretrain"),
    ship: bool = True,
    unet: ImageDenoiser | None = None,
    **loop_options,
) -> tuple[LoRAUNet, dict]:
    """Fine-tune (or continue) the perception diffusion model; ships the LoRA when the schedule completes."""
    parent = unet if unet is not None else load_image_model("cpu")[0]
    world = config.world(parent.config.image_size, parent.config.caption_length)

    def draw(data_seed: int, generator: torch.Generator):
        batch = make_shapes(config.batch, data_seed, world)
        return to_model_space(batch.images), batch.tokens

    model = seeded_init(config.seed, lambda: LoRAUNet(parent, config.lora_rank))
    loss_fn = seeded_diffusion_loss(
        draw, make_train_scheduler(), seed=config.seed, p_uncond=config.p_uncond, stream=seeds.METAPROMPTS_PRETRAIN
    )
    entry = {"parent": PRIMER_CHECKPOINT}
    if unet is None:
        entry["parent_sha256"] = checkpoints.manifest_entry(PRIMER_CHECKPOINT)["sha256"]
    return train_and_ship(
        model,
        loss_fn,
        target="metaprompts",
        checkpoint=CHECKPOINT,
        config=config.to_dict() | {"unet": parent.config.to_dict()},
        total_steps=config.steps,
        lr=config.lr,
        run_dir=run_dir,
        seed=config.seed,
        ship=ship,
        warmup=config.warmup,
        ema_decay=config.ema_decay,
        state_dict=lambda m: m.lora.state_dict(),
        entry=entry,
        command="python -m bytecourse train metaprompts --stage 1",
        **loop_options,
    )


def load_pretrained_unet(device: str | torch.device = "cpu") -> tuple[ImageDenoiser, dict]:
    """The primer's UNet with the shipped perception fine-tune folded in (a plain, unfrozen copy) and its entry."""
    state, entry = checkpoints.load_checkpoint(CHECKPOINT)
    parent, _ = load_image_model("cpu")
    if entry.get("parent_sha256") != checkpoints.manifest_entry(PRIMER_CHECKPOINT)["sha256"]:
        raise checkpoints.CheckpointError(f"{CHECKPOINT} was trained on another {PRIMER_CHECKPOINT}; retrain it")
    wrapper = LoRAUNet(parent, PretrainConfig.from_dict(_own(entry["config"])).lora_rank)
    wrapper.lora.load_state_dict(state)
    return wrapper.merged().to(device).requires_grad_(True), entry


def random_unet(config: UNetConfig, seed: int) -> ImageDenoiser:
    """The same architecture, randomly initialised (the "does pretraining matter?" control)."""
    return seeded_init(seed, lambda: ImageDenoiser(config))


def _own(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "unet"}
