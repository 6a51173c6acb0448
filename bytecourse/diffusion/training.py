"""The ε-prediction training step with condition dropout, and an EMA of the weights."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from .. import seeds
from ..configs import JSONConfig
from ..text import PAD_ID


def drop_condition(tokens: torch.Tensor, p_uncond: float, generator: torch.Generator) -> torch.Tensor:
    """Replace each caption by the null caption (all padding) with probability ``p_uncond`` — the training
    half of classifier-free guidance (Ho & Salimans 2022, Alg. 1)."""
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
    drop = torch.rand(tokens.shape[0], generator=generator) < p_uncond
    return torch.where(drop.to(tokens.device)[:, None], torch.full_like(tokens, PAD_ID), tokens)


def loss_weights(alphas_cumprod: torch.Tensor, weighting: str = "eps", max_weight: float = 20.0) -> torch.Tensor:
    """Per-sample weights of the ε-MSE at levels with ᾱ = ``alphas_cumprod``.

    ``"eps"``: 1 (DDPM's L_simple). ``"v"``: 1 + 1/SNR, SNR = ᾱ/(1−ᾱ), capped at ``max_weight`` — the ε-MSE
    rewritten as the v-prediction loss (Salimans & Ho 2022): ‖v̂ − v‖² = ‖ε̂ − ε‖²/ᾱ = (1 + 1/SNR)‖ε̂ − ε‖².
    Because x̂₀ − x₀ = −(σ/α)(ε̂ − ε), L_simple weighs an error in the *clean image* by SNR, which is ≪ 1 at the
    high-noise levels where a sample's layout — and a clip's motion — is decided; the v weighting keeps that
    signal (the cap stops the last few levels, where x_t carries no image at all, from dominating)."""
    if weighting == "eps":
        return torch.ones_like(alphas_cumprod)
    if weighting == "v":
        return (1 / alphas_cumprod).clamp(max=max_weight)
    raise ValueError(f"weighting must be 'eps' or 'v', got {weighting!r}")


def diffusion_loss(
    model: nn.Module,
    x0: torch.Tensor,
    tokens: torch.Tensor,
    scheduler: DDPMScheduler,
    generator: torch.Generator,
    p_uncond: float = 0.1,
    weighting: str = "eps",
    max_weight: float = 20.0,
    high_noise: tuple[float, int] = (0.0, 0),
) -> torch.Tensor:
    """L_simple = E_{t, ε} ‖ε − ε_θ(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t, c)‖² (DDPM Eq. 14), with CFG condition dropout
    (and optionally a per-level weight, :func:`loss_weights`).

    ``x0`` is in [−1, 1]. All randomness comes from ``generator`` (a CPU generator, so a run is the same on
    every device) and is then moved to ``x0``'s device.

    ``high_noise = (p, t_from)``: each sample's level is drawn from [t_from, T) instead of [0, T) with probability
    p — more of the batch where a sample's layout (a clip's motion) is decided. With p = 0 nothing extra is drawn,
    so runs without it are unchanged.
    """
    b = x0.shape[0]
    total = scheduler.config.num_train_timesteps
    t = torch.randint(0, total, (b,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    p_high, t_from = high_noise
    if p_high > 0:
        if not 0 <= t_from < total:
            raise ValueError(f"high_noise's t_from must be in [0, {total}), got {t_from}")
        high = torch.randint(t_from, total, (b,), generator=generator)
        t = torch.where(torch.rand(b, generator=generator) < p_high, high, t)
    t, noise = t.to(x0.device), noise.to(x0.device, x0.dtype)
    xt = scheduler.add_noise(x0, noise, t)
    cond = drop_condition(tokens, p_uncond, generator)
    if weighting == "eps":
        return F.mse_loss(model(xt, t, cond).float(), noise.float())
    w = loss_weights(scheduler.alphas_cumprod.to(x0.device)[t].float(), weighting, max_weight)
    per_sample = (model(xt, t, cond).float() - noise.float()).pow(2).flatten(1).mean(1)
    return (w * per_sample).mean()


class EMA:
    """Exponential moving average of the weights with the usual warm-up, decay_n = min(d, (1+n)/(10+n))."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def seeded_diffusion_loss(
    draw: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
    scheduler: DDPMScheduler,
    *,
    seed: int,
    p_uncond: float,
    stream: int = 0,
    weighting: str = "eps",
    max_weight: float = 20.0,
    high_noise: tuple[float, int] = (0.0, 0),
) -> Callable[[nn.Module, int, torch.device], torch.Tensor]:
    """``loss_fn(model, step, device)`` for :func:`bytecourse.trainer.train_loop`: step k of run seed s draws its own
    batch ``draw(data_seed, generator) → (x0 in model space, tokens)`` with data_seed = s·stride + stream + k (see
    :mod:`bytecourse.seeds`), and :func:`diffusion_loss` draws t, ε and the CFG dropout from the same CPU generator —
    so the data stream is identical however a run is split into resumed commands, and on every device."""

    def loss_fn(model: nn.Module, step: int, device: torch.device) -> torch.Tensor:
        data_seed = seed * seeds.TRAIN_SEED_STRIDE + stream + step
        generator = torch.Generator().manual_seed(data_seed + seeds.NOISE_SUBSTREAM)
        x0, tokens = draw(data_seed, generator)
        return diffusion_loss(
            model, x0.to(device), tokens.to(device), scheduler, generator, p_uncond, weighting, max_weight, high_noise
        )

    return loss_fn


@dataclass
class DiffusionTrainingConfig(JSONConfig):
    """What :func:`train_diffusion_model` reads from a model's training config (the primer's, the from-scratch video
    model's). A subclass names its denoiser class (``model_class``), holds its architecture config as ``unet`` and
    says how a batch is drawn (``draw``)."""

    steps: int = 1000
    batch: int = 16
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    p_uncond: float = 0.1
    seed: int = 0

    model_class: ClassVar[type[nn.Module]]

    def build(self) -> nn.Module:
        return self.model_class(self.unet)  # type: ignore[attr-defined]

    def draw(self, data_seed: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Training batch ``data_seed``: clean samples in model space [−1, 1] and their caption tokens."""
        raise NotImplementedError


def train_diffusion_model(
    config: DiffusionTrainingConfig, *, target: str, checkpoint: str, run_dir, ship: bool = True, **loop_options
):
    """Train a denoiser from scratch: ``config.build()`` seeded by ``config.seed``, the ε-loss on
    ``config.draw(data_seed, generator)`` batches (:func:`seeded_diffusion_loss`), and
    :func:`bytecourse.trainer.train_and_ship` with ``config``'s steps, peak lr, warm-up and EMA decay
    (``loop_options``: ``device``, ``resume``, ``max_minutes``, ``progress``, ``on_step``). Returns the EMA model and
    the summary."""
    from ..trainer import seeded_init, train_and_ship
    from .schedule import make_train_scheduler

    model = seeded_init(config.seed, config.build)
    loss_fn = seeded_diffusion_loss(config.draw, make_train_scheduler(), seed=config.seed, p_uncond=config.p_uncond)
    return train_and_ship(
        model,
        loss_fn,
        target=target,
        checkpoint=checkpoint,
        config=config.to_dict(),
        total_steps=config.steps,
        lr=config.lr,
        run_dir=run_dir,
        seed=config.seed,
        ship=ship,
        warmup=config.warmup,
        ema_decay=config.ema_decay,
        **loop_options,
    )
