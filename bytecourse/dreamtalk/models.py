"""DREAM-Talk's two networks and the LSTM baseline, over the Talking world's coefficient sequences.

**EmoDiff** (DREAM-Talk §3.1, as the abstract and project page describe it): a transformer that *denoises a whole
sequence* of 3-D expressions and head poses, x ∈ R^{T×D}, with a standard DDPM,

    q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I),     L_simple = E_{x_0, ε, t} ‖ε − ε_θ(x_t, t, c)‖²,

conditioned on c = (audio features, the **initial state** x_0[0] — the first-frame expression — and the **emotion
style**, a clip of the same emotion that does not depend on the input audio). The conditions enter as tokens and
as per-frame additions:

- every frame token is ``W_x x_t[f] + AudioEncoder(a)[f] + p(f) + e(t)``: the noisy coefficients, the audio
  around frame f (a 1-D convolution, receptive field ±4 frames), the sinusoidal frame position p(f) and the
  diffusion-time embedding e(t) — the "time-position-aware embeddings";
- three prefix tokens carry e(t), the style code ``StyleEncoder(style clip)`` and ``W_0 x_0[0]``.

**Classifier-free guidance on the style** (Ho & Salimans 2022): the style code is replaced by a learnt null code
with probability ``p_drop_style`` in training, and sampling uses ε̂ = ε_θ(x_t, a, x_0[0], ∅) + w (ε_θ(x_t, a,
x_0[0], s) − ε_θ(x_t, a, x_0[0], ∅)); w > 1 pushes the sequence towards what distinguishes the style.

**LSTM baseline**: a bidirectional LSTM regressor from the same inputs to x_0, trained with MSE. The paper argues
that such regressors "wash out" emotional variety: MSE makes them predict the conditional *mean*, and the mean of
a random oscillation is flat.

**Lip refiner** (§3.2): a separate network from (audio, style) to **the mouth coefficients only**; at inference its
output replaces EmoDiff's mouth, leaving the upper face and the pose untouched. It is a regressor on purpose: the
mouth given the audio is (nearly) deterministic, so its conditional mean is the right answer, whereas a diffusion
sample carries sampling noise into the lips.

All models work in normalised coefficients (the world's per-coefficient mean and std, stored as buffers, so each
checkpoint carries its normaliser) and take and return raw coefficients at their public entry points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..configs import JSONConfig
from ..diffusion.attention import Attention, FeedForward
from ..diffusion.layers import timestep_embedding
from ..worlds.talking import AUDIO_DIM, MOUTH_DIMS, D, TalkingConfig, coefficient_statistics

N_MOUTH = MOUTH_DIMS.stop - MOUTH_DIMS.start


@dataclass(frozen=True)
class DreamTalkConfig(JSONConfig):
    """Sizes shared by the three networks (toy scale; each trains in minutes on a 2-core CPU)."""

    frames: int = 40
    coeff_dim: int = D
    audio_dim: int = AUDIO_DIM
    dim: int = 96
    layers: int = 4
    heads: int = 4
    style_layers: int = 1
    audio_kernel: int = 5
    p_drop_style: float = 0.1
    lstm_hidden: int = 64
    refiner_layers: int = 2


def check_inputs(audio: torch.Tensor, initial: torch.Tensor | None, style: torch.Tensor, config: DreamTalkConfig):
    """One clear ``ValueError`` for inputs that do not fit: audio (B, T, F), initial (B, D), style (B, T', D)."""
    if not isinstance(audio, torch.Tensor) or audio.dim() != 3 or audio.shape[-1] != config.audio_dim:
        raise ValueError(f"audio must be (B, T, {config.audio_dim}) features, got {_shape(audio)}")
    if audio.shape[1] != config.frames:
        raise ValueError(
            f"audio has {audio.shape[1]} frames but the model makes {config.frames}-frame sequences: "
            "audio and frames do not match"
        )
    if not isinstance(style, torch.Tensor) or style.dim() != 3 or style.shape[-1] != config.coeff_dim:
        raise ValueError(f"style must be (B, T, {config.coeff_dim}) coefficients, got {_shape(style)}")
    if style.shape[0] != audio.shape[0]:
        raise ValueError(f"style has batch {style.shape[0]} but audio has {audio.shape[0]}")
    if initial is not None:
        if not isinstance(initial, torch.Tensor) or initial.shape != (audio.shape[0], config.coeff_dim):
            raise ValueError(f"initial must be ({audio.shape[0]}, {config.coeff_dim}), got {_shape(initial)}")
    for name, x in (("audio", audio), ("style", style), ("initial", initial)):
        if x is not None and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite values")


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


class Block(nn.Module):
    """Pre-norm transformer block (self-attention through SDPA, then a feed-forward)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads=heads)
        self.norm2, self.ff = nn.LayerNorm(dim), FeedForward(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class Normaliser(nn.Module):
    """The world's per-coefficient mean and std as buffers (saved with the weights)."""

    def __init__(self, config: DreamTalkConfig):
        super().__init__()
        mean, std = coefficient_statistics(TalkingConfig(frames=config.frames, audio_dim=config.audio_dim))
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denorm(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


class AudioEncoder(nn.Module):
    """Per-frame audio features (B, T, F) → (B, T, dim): two 1-D convolutions over time (receptive field
    2·(kernel − 1) + 1 frames), so each frame hears its neighbours, as coarticulation requires."""

    def __init__(self, audio_dim: int, dim: int, kernel: int = 5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(audio_dim, dim, kernel, padding=kernel // 2),
            nn.GELU(),
            nn.Conv1d(dim, dim, kernel, padding=kernel // 2),
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.net(audio.transpose(1, 2)).transpose(1, 2)


class StyleEncoder(nn.Module):
    """A style clip (B, T, D), normalised → one style code (B, dim): a small transformer over its frames (with frame
    positions), mean-pooled. It never sees the input audio (the style clip has its own sentence)."""

    def __init__(self, coeff_dim: int, dim: int, layers: int, heads: int):
        super().__init__()
        self.proj = nn.Linear(coeff_dim, dim)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(layers)])
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        pos = timestep_embedding(torch.arange(style.shape[1], device=style.device), self.proj.out_features)
        x = self.proj(style) + pos
        for b in self.blocks:
            x = b(x)
        return self.out(x.mean(1))


class EmoDiff(nn.Module):
    """``forward(x_t (B,T,D) normalised, t (B,), audio (B,T,F), initial (B,D), style (B,T',D), drop_style (B,) bool)
    → ε̂ (B,T,D)``. Raw-coefficient inputs (``initial``, ``style``) are normalised inside."""

    def __init__(self, config: DreamTalkConfig = DreamTalkConfig()):
        super().__init__()
        self.config = config
        c = config
        self.normaliser = Normaliser(c)
        self.x_in = nn.Linear(c.coeff_dim, c.dim)
        self.audio = AudioEncoder(c.audio_dim, c.dim, c.audio_kernel)
        self.style = StyleEncoder(c.coeff_dim, c.dim, c.style_layers, c.heads)
        self.null_style = nn.Parameter(torch.zeros(c.dim))
        self.initial_in = nn.Linear(c.coeff_dim, c.dim)
        self.time = nn.Sequential(nn.Linear(c.dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.blocks = nn.ModuleList([Block(c.dim, c.heads) for _ in range(c.layers)])
        self.out = nn.Sequential(nn.LayerNorm(c.dim), nn.Linear(c.dim, c.coeff_dim))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)
        self.register_buffer("frame_pos", timestep_embedding(torch.arange(c.frames), c.dim), persistent=False)

    def style_code(self, style: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        s = self.style(self.normaliser.norm(style))
        if drop is not None:
            s = torch.where(drop[:, None], self.null_style.expand_as(s), s)
        return s

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, initial: torch.Tensor, style_code: torch.Tensor
    ) -> torch.Tensor:
        """ε̂ for normalised x_t, given the audio, the raw initial state and a style code (:meth:`style_code`)."""
        temb = self.time(timestep_embedding(t, self.config.dim))  # (B, dim)
        frames = self.x_in(x_t) + self.audio(audio) + self.frame_pos[: x_t.shape[1]] + temb[:, None]
        prefix = torch.stack([temb, style_code, self.initial_in(self.normaliser.norm(initial))], 1)
        h = torch.cat([prefix, frames], 1)
        for b in self.blocks:
            h = b(h)
        return self.out(h[:, prefix.shape[1] :])


class LSTMRegressor(nn.Module):
    """The baseline: ``forward(audio, initial, style) → coefficients (B,T,D)`` (raw), a 2-layer bidirectional LSTM over
    [audio features, style code, initial state] per frame, trained with MSE."""

    def __init__(self, config: DreamTalkConfig = DreamTalkConfig()):
        super().__init__()
        self.config = c = config
        self.normaliser = Normaliser(c)
        self.audio = AudioEncoder(c.audio_dim, c.dim, c.audio_kernel)
        self.style = StyleEncoder(c.coeff_dim, c.dim, c.style_layers, c.heads)
        self.initial_in = nn.Linear(c.coeff_dim, c.dim)
        self.lstm = nn.LSTM(3 * c.dim, c.lstm_hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * c.lstm_hidden, c.coeff_dim)

    def forward_normalised(self, audio, initial, style) -> torch.Tensor:
        frames = audio.shape[1]
        s = self.style(self.normaliser.norm(style))[:, None].expand(-1, frames, -1)
        i = self.initial_in(self.normaliser.norm(initial))[:, None].expand(-1, frames, -1)
        h, _ = self.lstm(torch.cat([self.audio(audio), s, i], -1))
        return self.out(h)

    @torch.no_grad()
    def predict(self, audio: torch.Tensor, initial: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        check_inputs(audio, initial, style, self.config)
        return self.normaliser.denorm(self.forward_normalised(audio, initial, style))


class LipRefiner(nn.Module):
    """``forward(audio, style) → mouth coefficients (B,T,4)`` (raw): audio features plus the style code, a small
    transformer over the frames, a linear head onto the mouth coefficients only."""

    def __init__(self, config: DreamTalkConfig = DreamTalkConfig()):
        super().__init__()
        self.config = c = config
        self.normaliser = Normaliser(c)
        self.audio = AudioEncoder(c.audio_dim, c.dim, c.audio_kernel)
        self.style = StyleEncoder(c.coeff_dim, c.dim, c.style_layers, c.heads)
        self.blocks = nn.ModuleList([Block(c.dim, c.heads) for _ in range(c.refiner_layers)])
        self.out = nn.Sequential(nn.LayerNorm(c.dim), nn.Linear(c.dim, N_MOUTH))
        self.register_buffer("frame_pos", timestep_embedding(torch.arange(c.frames), c.dim), persistent=False)

    def forward_normalised(self, audio, style) -> torch.Tensor:
        h = self.audio(audio) + self.frame_pos[: audio.shape[1]] + self.style(self.normaliser.norm(style))[:, None]
        for b in self.blocks:
            h = b(h)
        return self.out(h)

    @torch.no_grad()
    def predict(self, audio: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        check_inputs(audio, None, style, self.config)
        n = self.forward_normalised(audio, style)
        return n * self.normaliser.std[MOUTH_DIMS] + self.normaliser.mean[MOUTH_DIMS]

    @torch.no_grad()
    def refine(self, coeffs: torch.Tensor, audio: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """EmoDiff's output with its mouth coefficients replaced by the refiner's; everything else untouched."""
        out = coeffs.clone()
        out[..., MOUTH_DIMS] = self.predict(audio, style)
        return out


__all__ = ["AudioEncoder", "DreamTalkConfig", "EmoDiff", "LSTMRegressor", "LipRefiner", "StyleEncoder", "check_inputs"]
