"""A compact caption-conditioned video denoiser ε_θ(x_t, t, caption) for (B, T, C, H, W) clips.

Each transformer block works at ≤16×16 and runs, in order (the layout of AnimateDiff/ModelScope-style
video UNets, which Boximator and MagicAnimate build on):

    spatial self-attention (per frame, over its H·W tokens)
    → ``post_spatial`` layers (empty here; Boximator inserts its box self-attention layer)
    → caption cross-attention (per frame)
    → temporal self-attention (per spatial location, over the T frames, with sinusoidal frame positions)
    → feed-forward.

Every attention is an :class:`~bytecourse.diffusion.attention.Attention` with a swappable processor; the
``extra`` dict passed to ``forward`` reaches every processor and ``post_spatial`` layer (box tokens,
reference features, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import Attention, FeedForward
from .layers import CaptionEncoder, JSONConfig, ResBlock, norm, timestep_embedding


@dataclass(frozen=True)
class VideoUNetConfig(JSONConfig):
    frames: int = 8
    image_size: int = 32
    channels: int = 3
    unshuffle: int = 2  # 32×32 → 16×16 before the first convolution
    widths: tuple[int, ...] = (64, 96)
    heads: int = 4
    text_dim: int = 64
    text_layers: int = 2
    caption_length: int = 24


class VideoTransformerBlock(nn.Module):
    """Spatial self-attn → [post_spatial] → cross-attn → temporal attn → FF, all pre-norm residual."""

    def __init__(self, dim: int, context_dim: int, heads: int, max_frames: int = 64):
        super().__init__()
        self.norm_spatial = nn.LayerNorm(dim)
        self.spatial_attn = Attention(dim, heads=heads)
        self.post_spatial = nn.ModuleList()  # modules called as m(tokens, frames=T, extra=extra) → tokens
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, context_dim, heads=heads)
        self.norm_temporal = nn.LayerNorm(dim)
        self.temporal_attn = Attention(dim, heads=heads)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)
        self.register_buffer("frame_pos", timestep_embedding(torch.arange(max_frames), dim), persistent=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor, frames: int, extra: dict | None = None) -> torch.Tensor:
        """``x (B·T, C, H, W)``, ``context (B·T, L, D)``."""
        extra = extra or {}
        bt, c, h, w = x.shape
        b = bt // frames
        tok = x.flatten(2).transpose(1, 2)  # (B·T, HW, C)
        tok = tok + self.spatial_attn(self.norm_spatial(tok), role="spatial", frames=frames, extra=extra)
        for layer in self.post_spatial:
            tok = layer(tok, frames=frames, extra=extra)
        tok = tok + self.cross_attn(self.norm_cross(tok), context, role="cross", frames=frames, extra=extra)
        # temporal: (B·T, HW, C) → (B·HW, T, C)
        tt = tok.view(b, frames, h * w, c).transpose(1, 2).reshape(b * h * w, frames, c)
        tt = tt + self.temporal_attn(
            self.norm_temporal(tt + self.frame_pos[:frames]), role="temporal", frames=frames, extra=extra
        )
        tok = tt.view(b, h * w, frames, c).transpose(1, 2).reshape(bt, h * w, c)
        tok = tok + self.ff(self.norm_ff(tok))
        return tok.transpose(1, 2).reshape(bt, c, h, w)


class VideoDenoiser(nn.Module):
    """``forward(x (B,T,C,H,W), t (B,), tokens (B,L), extra=None) → ε̂ (B,T,C,H,W)``.

    Per-frame ResBlocks (2-D convolutions over B·T images) with a video transformer block at each
    resolution (16×16 and 8×8 for 32×32 clips), a down and an up path with skips."""

    def __init__(self, config: VideoUNetConfig = VideoUNetConfig()):
        super().__init__()
        self.config = config
        c0, c1 = config.widths[0], config.widths[-1]
        temb = 2 * c0
        self.time_mlp = nn.Sequential(nn.Linear(c0, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.text = CaptionEncoder(config.text_dim, config.caption_length, config.text_layers, config.heads)
        s = config.unshuffle
        self.stem = nn.PixelUnshuffle(s) if s > 1 else nn.Identity()
        self.unstem = nn.PixelShuffle(s) if s > 1 else nn.Identity()
        self.conv_in = nn.Conv2d(config.channels * s * s, c0, 3, padding=1)
        self.down0 = ResBlock(c0, c0, temb)
        self.block0 = VideoTransformerBlock(c0, config.text_dim, config.heads)
        self.downsample = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.down1 = ResBlock(c0, c1, temb)
        self.block1 = VideoTransformerBlock(c1, config.text_dim, config.heads)
        self.mid = ResBlock(c1, c1, temb)
        self.up1 = ResBlock(2 * c1, c1, temb)
        self.block1_up = VideoTransformerBlock(c1, config.text_dim, config.heads)
        self.upsample = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c1, c1, 3, padding=1))
        self.up0 = ResBlock(c1 + c0, c0, temb)
        self.block0_up = VideoTransformerBlock(c0, config.text_dim, config.heads)
        self.out = nn.Sequential(norm(c0), nn.SiLU(), nn.Conv2d(c0, config.channels * s * s, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def transformer_blocks(self) -> list[VideoTransformerBlock]:
        return [self.block0, self.block1, self.block1_up, self.block0_up]

    def forward(
        self, x: torch.Tensor, t: torch.Tensor | int, tokens: torch.Tensor, extra: dict | None = None
    ) -> torch.Tensor:
        config = self.config
        if (
            x.dim() != 5
            or x.shape[2] != config.channels
            or x.shape[-1] != config.image_size
            or x.shape[-2] != config.image_size
        ):
            raise ValueError(
                f"x must be (B, T, {config.channels}, {config.image_size}, {config.image_size}), got {tuple(x.shape)}"
            )
        b, frames = x.shape[:2]
        if frames > self.block0.frame_pos.shape[0]:
            raise ValueError(f"at most {self.block0.frame_pos.shape[0]} frames are supported, got {frames}")
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(b)
        temb = self.time_mlp(timestep_embedding(t, config.widths[0]).to(x.dtype)).repeat_interleave(frames, 0)
        ctx = self.text(tokens).repeat_interleave(frames, 0)
        h0 = self.conv_in(self.stem(x.flatten(0, 1)))
        h0 = self.block0(self.down0(h0, temb), ctx, frames, extra)
        h1 = self.block1(self.down1(self.downsample(h0), temb), ctx, frames, extra)
        h = self.mid(h1, temb)
        h = self.block1_up(self.up1(torch.cat([h, h1], 1), temb), ctx, frames, extra)
        h = self.block0_up(self.up0(torch.cat([self.upsample(h), h0], 1), temb), ctx, frames, extra)
        return self.unstem(self.out(h)).view_as(x)
