"""The course's shared image model: the primer's caption-conditioned Shapes denoiser, as later chapters use it.

Chapter 00 (:mod:`bytecourse.primer`) trains it and ships ``data/primer_unet.safetensors``; SAG, AdjointDPM and
the inflated video model load it through :func:`load_image_model`. The sampling defaults (DDIM 20 steps,
guidance scale 2) and the held-out evaluation captions are shared too, so every chapter that reads this model
measures it on the same footing.
"""

from __future__ import annotations

import torch

from .. import checkpoints, seeds
from ..worlds import ShapesConfig, make_shapes
from .unet import ImageDenoiser, UNetConfig

CHECKPOINT = "primer_unet"
EVAL_SEED_OFFSET = seeds.PRIMER_EVAL  # evaluation captions/noise never coincide with training batches
DEFAULT_GUIDANCE_SCALE = 2.0  # in the plateau of the primer's guidance table (1.5–2); see notebook 00
DEFAULT_STEPS = 20


def load_image_model(device: str | torch.device = "cpu") -> tuple[ImageDenoiser, dict]:
    """The shipped image model (hash-verified, frozen, eval mode) and its manifest entry."""
    state, entry = checkpoints.load_checkpoint(CHECKPOINT)
    model = ImageDenoiser(UNetConfig.from_dict(entry["config"]["unet"]))
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False), entry


def eval_captions(seed: int, num_objects: int, n: int = 64, image_size: int = 32) -> list[str]:
    """The held-out captions of evaluation seed ``seed`` (``n`` captions with ``num_objects`` objects each)."""
    world = ShapesConfig(size=image_size)
    return make_shapes(n, EVAL_SEED_OFFSET + seed, world, num_objects=num_objects).captions


def sample_captions(
    model: ImageDenoiser,
    captions: list[str],
    *,
    steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    seed: int = 0,
    sampler: str = "ddim",
    progress: bool = False,
    eta: float = 0.0,
    use_clipped_model_output: bool = True,
) -> torch.Tensor:
    """Images ``(B,3,H,W)`` in [0, 1] for captions, from seeded noise. ``sampler``: ``"ddim"`` (``steps``
    steps, stochasticity ``eta``) or ``"ddpm"`` (all 1000 ancestral steps); ``use_clipped_model_output``: see
    :func:`~bytecourse.diffusion.sampling.ddim_sample` (the remedy for guidance collapse, issue 15; ``False``
    reproduces the collapse)."""
    from .. import text
    from ..device import autocast
    from ..validation import check_choice, check_strings
    from .sampling import ddim_sample, ddpm_sample, initial_noise, to_image_space
    from .schedule import make_train_scheduler

    check_choice("sampler", sampler, ("ddim", "ddpm"))
    captions = check_strings("captions", captions)
    config = model.config
    device = next(model.parameters()).device
    tokens = text.encode(captions, config.caption_length).to(device)
    noise = initial_noise((len(captions), config.channels, config.image_size, config.image_size), seed, device)
    scheduler = make_train_scheduler()
    with autocast(device):
        if sampler == "ddim":
            x = ddim_sample(
                model,
                noise,
                tokens,
                scheduler,
                steps=steps,
                guidance_scale=guidance_scale,
                seed=seed,
                progress=progress,
                eta=eta,
                use_clipped_model_output=use_clipped_model_output,
            )
        else:
            x = ddpm_sample(
                model, noise, tokens, scheduler, guidance_scale=guidance_scale, seed=seed, progress=progress
            )
    return to_image_space(x.float())


def measure(images: torch.Tensor, captions: list[str]) -> dict[str, float]:
    """Oracle metrics of samples against their captions: colour, shape, exact-set accuracy and realism."""
    from ..oracle import caption_accuracy, detect_objects, realism

    acc = caption_accuracy(captions, detect_objects(images))
    return {**acc, "realism": float(realism(images).mean())}
