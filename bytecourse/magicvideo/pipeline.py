"""The cascade, stage by stage (MagicVideo-V2 §2, Figure 1): T2I → I2V → V2V → VFI, and the single-stage baseline.

Every stage is a pure function of its inputs and a seed, so the notebook, the widget and ``eval magicvideo`` run the
same code:

- :func:`text_to_image` — the primer's model draws the reference frame (32 px) from the caption's object phrases
  (DDIM, CFG);
- :func:`image_to_video` — 8 keyframes (32 px) from the caption and the reference, starting from the latent noise
  prior (:func:`~bytecourse.magicvideo.models.noise_prior`), CFG over caption and reference together (the
  unconditional half has neither);
- :func:`video_to_video` — the 64-px clip from the keyframes upsampled bicubically, the caption and the reference
  (DDIM; the condition is strong, so no CFG);
- :func:`interpolate` — 8 → 15 frames with the frame interpolator (or linear blending, the baseline);
- :func:`cascade` runs all four; :func:`single_stage` is the baseline of the chapter's Good/Same/Bad table: the
  course's video model alone, upsampled bicubically to 64 px and linearly blended to 15 frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.inflate import object_tokens
from ..diffusion.sampling import (
    ddim_levels,
    ddim_sample,
    ddim_start_level,
    initial_noise,
    to_image_space,
    to_model_space,
)
from ..diffusion.schedule import make_train_scheduler
from ..validation import check_float, check_int
from .models import NOISE_PRIORS, interpolate_clip, linear_blend, noise_prior
from .train import upsample


@dataclass(frozen=True)
class CascadeSettings:
    """The cascade's sampling knobs (the chapter's defaults; ``eval magicvideo`` sweeps the noise prior)."""

    steps: int = 20
    t2i_guidance: float = 3.0
    i2v_guidance: float = 2.0
    prior: str = "matched"  # what ``eval magicvideo``'s choose_prior picked on validation captions
    strength: float = 0.5  # λ (shift) or γ (vp, matched)
    v2v_steps: int = 20
    v2v_start: int | None = None  # None: V2V from pure noise; a timestep: refine the noised upsampled keyframes

    def validate(self) -> None:
        check_int("steps", self.steps, 1, 1000)
        check_int("v2v_steps", self.v2v_steps, 1, 1000)
        check_float("t2i_guidance", self.t2i_guidance, 0.0, 50.0)
        check_float("i2v_guidance", self.i2v_guidance, 0.0, 50.0)
        if self.prior not in NOISE_PRIORS:
            raise ValueError(f"prior must be one of {NOISE_PRIORS}, got {self.prior!r}")
        noise_prior(torch.zeros(1, 1, 3, 2, 2), torch.zeros(1, 3, 2, 2), self.prior, self.strength)  # range checks


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def text_to_image(primer, tokens: torch.Tensor, seed: int, guidance: float = 3.0, steps: int = 20) -> torch.Tensor:
    """T2I: reference frames ``(B, 3, 32, 32)`` in [0, 1] for Motion captions ``tokens (B, 24)`` — the primer reads
    the caption's object phrases ("a red circle moves left" → "a red circle")."""
    device = _device(primer)
    cond = object_tokens(tokens, primer.config.caption_length).to(device)
    noise = initial_noise((tokens.shape[0], 3, 32, 32), seed, device)
    x = ddim_sample(primer, noise, cond, make_train_scheduler(), steps=steps, guidance_scale=guidance)
    return to_image_space(x).float().cpu()


class _I2VEps:
    """``model(x, t, cond)`` for the sampler: ``cond`` is the caption; the reference rides along per half (CFG's
    unconditional half reads no reference)."""

    def __init__(self, i2v, ref: torch.Tensor):
        self.i2v, self.ref = i2v, ref
        self.parameters = i2v.parameters

    def __call__(self, x, t, tokens):
        b = self.ref.shape[0]
        if x.shape[0] == b:
            return self.i2v(x, t, tokens, self.ref)
        cond = self.i2v(x[:b], t[:b], tokens[:b], self.ref)
        return torch.cat([cond, self.i2v(x[b:], t[b:], tokens[b:], None)])


class _V2VEps:
    """``model(x, t, cond)`` for the sampler: the upsampled keyframes and the reference ride along (no CFG)."""

    def __init__(self, v2v, low: torch.Tensor, ref: torch.Tensor | None):
        self.v2v, self.low, self.ref = v2v, low, ref
        self.parameters = v2v.parameters

    def __call__(self, x, t, tokens):
        return self.v2v(x, t, tokens, self.low, self.ref)


@torch.no_grad()
def image_to_video(
    i2v,
    tokens: torch.Tensor,
    reference: torch.Tensor,
    seed: int,
    guidance: float = 2.0,
    prior: str = "shift",
    strength: float = 0.25,
    steps: int = 20,
    frames: int = 8,
) -> torch.Tensor:
    """I2V: keyframes ``(B, T, 3, 32, 32)`` in [0, 1] from ``reference (B, 3, 32, 32)`` in [0, 1] and the captions,
    DDIM from the noise prior ``prior`` at ``strength`` (``"matched"``: from the first level whose ᾱ_t ≥ γ, the
    prior's formula at γ = that ᾱ_t; :func:`~bytecourse.magicvideo.models.noise_prior`)."""
    if reference.dim() != 4 or reference.shape[1:] != (3, 32, 32) or reference.shape[0] != tokens.shape[0]:
        raise ValueError(f"reference must be ({tokens.shape[0]}, 3, 32, 32), got {tuple(reference.shape)}")
    device = _device(i2v)
    ref = to_model_space(reference.to(device))
    eps = initial_noise((tokens.shape[0], frames, 3, 32, 32), seed, device)
    scheduler, start = make_train_scheduler(), None
    if prior == "matched":
        noise_prior(eps[:1, :1], ref[:1], prior, strength)  # the range checks
        start, strength = ddim_start_level(scheduler, steps, strength)
    x_t = noise_prior(eps, ref, prior, strength)
    model = _I2VEps(i2v, ref)
    x = ddim_sample(model, x_t, tokens.to(device), scheduler, steps=steps, guidance_scale=guidance, start=start)
    return to_image_space(x).float().cpu()


@torch.no_grad()
def video_to_video(
    v2v,
    tokens: torch.Tensor,
    keyframes: torch.Tensor,
    reference: torch.Tensor | None,
    seed: int,
    steps: int = 20,
    start: int | None = None,
) -> torch.Tensor:
    """V2V: the 64-px clip ``(B, T, 3, 64, 64)`` in [0, 1] from 32-px ``keyframes (B, T, 3, 32, 32)``, the caption
    and the reference (``None``: without it). DDIM from pure noise, or (``start`` = a timestep) a refinement: the
    upsampled keyframes noised to the first DDIM level ≤ ``start`` and denoised from there (SDEdit's start)."""
    if keyframes.dim() != 5 or keyframes.shape[2:] != (3, 32, 32):
        raise ValueError(f"keyframes must be (B, T, 3, 32, 32), got {tuple(keyframes.shape)}")
    device = _device(v2v)
    low = upsample(to_model_space(keyframes.to(device)))
    ref = None if reference is None else to_model_space(reference.to(device))
    cond = tokens.to(device)
    noise = initial_noise(tuple(low.shape), seed, device)
    scheduler, x = make_train_scheduler(), noise
    if start is not None:
        first = ddim_levels(scheduler, steps, start)[0]
        x = scheduler.add_noise(low, noise, torch.tensor([first]))
    x = ddim_sample(_V2VEps(v2v, low, ref), x, cond, scheduler, steps=steps, guidance_scale=1.0, start=start)
    return to_image_space(x).float().cpu()


@torch.no_grad()
def interpolate(clip: torch.Tensor, vfi=None) -> torch.Tensor:
    """VFI: ``(B, T, 3, H, W)`` → ``(B, 2T−1, 3, H, W)`` with the interpolator ``vfi`` (``None``: linear blending)."""
    if vfi is None:
        return interpolate_clip(clip, linear_blend)
    device = _device(vfi)
    return interpolate_clip(clip.to(device), vfi).float().cpu()


@torch.no_grad()
def cascade(models: dict, tokens: torch.Tensor, seed: int, settings: CascadeSettings = CascadeSettings()) -> dict:
    """All four stages for captions ``tokens (B, 24)``: ``{"reference", "keyframes", "clip64", "clip15"}``."""
    settings.validate()
    reference = text_to_image(models["primer"], tokens, seed, settings.t2i_guidance, settings.steps)
    keyframes = image_to_video(
        models["i2v"],
        tokens,
        reference,
        seed + 1,
        settings.i2v_guidance,
        settings.prior,
        settings.strength,
        settings.steps,
    )
    clip64 = video_to_video(
        models["v2v"], tokens, keyframes, reference, seed + 2, settings.v2v_steps, settings.v2v_start
    )
    return {
        "reference": reference,
        "keyframes": keyframes,
        "clip64": clip64,
        "clip15": interpolate(clip64, models["vfi"]),
    }


@torch.no_grad()
def single_stage(video, tokens: torch.Tensor, seed: int, guidance: float = 2.0, steps: int = 20) -> dict:
    """The baseline: the course's video model alone (32 px, 8 frames), upsampled bicubically to 64 px and linearly
    blended to 15 frames — a fair baseline, not a frame-repeated one."""
    device = _device(video)
    noise = initial_noise((tokens.shape[0], 8, 3, 32, 32), seed, device)
    x = ddim_sample(video, noise, tokens.to(device), make_train_scheduler(), steps=steps, guidance_scale=guidance)
    keyframes = to_image_space(x).float().cpu()
    clip64 = upsample(keyframes).clamp(0, 1)
    return {"keyframes": keyframes, "clip64": clip64, "clip15": interpolate(clip64)}
