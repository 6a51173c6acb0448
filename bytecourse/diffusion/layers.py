"""Building blocks shared by the image and video denoisers."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import text
from ..configs import JSONConfig  # noqa: F401 (re-exported: the denoisers import it from here)
from .attention import Attention, FeedForward


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps ``t (B,)`` → ``(B, dim)`` (DDPM, §B)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """GroupNorm–SiLU–conv ×2 with a FiLM (scale, shift) from the time embedding, and a 1×1 skip."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, 2 * out_ch)
        self.norm2 = norm(out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.temb(nn.functional.silu(temb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(nn.functional.silu(h)))
        return h + self.skip(x)


class SpatialTransformer(nn.Module):
    """Pre-norm transformer over the H·W tokens of a feature map: self-attention → [``post_spatial``] →
    caption cross-attention → feed-forward (the Stable Diffusion block, minus the linear projections in and out).

    ``post_spatial`` is empty (so the image model's weights and outputs are unchanged); a video chapter may
    insert layers called as ``m(tokens, frames=T, extra=extra) → tokens`` between self- and cross-attention,
    where GLIGEN and Boximator put their gated box attention. Keyword arguments of ``forward`` (``frames``,
    ``extra``) reach both attentions' processors (e.g. MagicAnimate's reference K/V) with ``role="spatial"`` or
    ``role="cross"``."""

    def __init__(self, dim: int, context_dim: int, heads: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads=heads)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, context_dim, heads=heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)
        self.post_spatial = nn.ModuleList()

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, frames: int = 1, extra: dict | None = None
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        extra = extra or {}
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.self_attn(self.norm1(tokens), role="spatial", frames=frames, extra=extra)
        for layer in self.post_spatial:
            tokens = layer(tokens, frames=frames, extra=extra)
        tokens = tokens + self.cross_attn(self.norm2(tokens), context, role="cross", frames=frames, extra=extra)
        tokens = tokens + self.ff(self.norm3(tokens))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class CaptionEncoder(nn.Module):
    """Token embedding + learned positions + a small transformer encoder → per-token context vectors.

    The null caption (all padding) is a valid input: classifier-free guidance's unconditional branch.
    """

    def __init__(self, dim: int, length: int, layers: int = 2, heads: int = 4):
        super().__init__()
        self.length = length
        self.embed = nn.Embedding(text.VOCAB_SIZE, dim)
        self.pos = nn.Parameter(torch.zeros(1, length, dim))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """``offset`` (B, 1, dim), optional: added to every token's input (e.g. a frame embedding)."""
        if tokens.dim() != 2 or tokens.shape[1] != self.length:
            raise ValueError(f"tokens must be (B, {self.length}), got {tuple(tokens.shape)}")
        x = self.embed(tokens) + self.pos
        return self.out_norm(self.encoder(x if offset is None else x + offset))
