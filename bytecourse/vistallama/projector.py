"""The frame encoder and Vista-LLaMA's **sequential visual projector** (arXiv 2312.08870, §3.2).

Per frame t a Q-Former-style block turns the frame's patch features o_t into Q visual tokens:

    baseline (independent):  x_t = f_Q(o_t, P)
    sequential:              x_1 = f_Q(o_1, P),   x_t = first Q outputs of f_Q(o_t, [P ; stopgrad(x_{t−1})])

P are learned query tokens; f_Q alternates self-attention over the query set, cross-attention to the frame's
patches and an MLP. The recurrence runs over all T frames; the official code then keeps every ``interval``-th output
ending at the last frame (``interval = T//4``: 4 frames × 32 queries = 128 tokens). ``keep_every`` is that interval
(1, the default, keeps every frame; the chapter's selection arms keep 3, the last frame of each segment, with 3× the
queries so the LM reads as many tokens per segment — see ``train.VARIANTS``).

Like the official code's Q-Former, it has **no position embeddings**, so with EDVT (where the
language model sees no visual positions) frame order reaches the LM through this recurrence. The tokens of the
chosen frames are projected to the LM's width (Linear) and handed over in frame order.

Attention is ``torch.nn.functional.scaled_dot_product_attention`` (through the substrate's ``Attention``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..configs import JSONConfig
from ..diffusion.attention import Attention, FeedForward


@dataclass(frozen=True)
class ProjectorConfig(JSONConfig):
    image_size: int = 32
    patch: int = 4  # the frame encoder's stride: (32/4)² = 64 patch tokens per frame
    feat_dim: int = 64
    dim: int = 64
    queries: int = 4
    layers: int = 2
    heads: int = 4
    lm_dim: int = 128
    sequential: bool = True
    keep_every: int = 1  # 1: every frame's tokens reach the LM; n: every n-th output, ending at the last frame

    def __post_init__(self):
        if self.keep_every < 1:
            raise ValueError(f"keep_every must be ≥ 1, got {self.keep_every}")


def kept_frames(frames: int, every: int) -> list[int]:
    """Which recurrence outputs reach the LM: every ``every``-th frame, counted back from the last one (the official
    code's ``interval`` rule), in frame order. ``kept_frames(12, 3) == [2, 5, 8, 11]``."""
    if frames < 1 or every < 1:
        raise ValueError(f"frames and every must be ≥ 1, got {frames}, {every}")
    return list(range(frames - 1, -1, -every))[::-1]


class FrameEncoder(nn.Module):
    """A small CNN: (B, 3, H, W) in [0, 1] → patch features (B, (H/p)·(W/p), feat_dim) (stands in for EVA-CLIP)."""

    def __init__(self, config: ProjectorConfig):
        super().__init__()
        if config.patch not in (2, 4, 8):
            raise ValueError(f"patch must be 2, 4 or 8, got {config.patch}")
        c = config.feat_dim
        layers: list[nn.Module] = [nn.Conv2d(3, c // 2, 3, padding=1), nn.SiLU()]
        ch, stride = c // 2, 1
        while stride < config.patch:
            layers += [nn.Conv2d(ch, c, 3, stride=2, padding=1), nn.SiLU()]
            ch, stride = c, stride * 2
        layers += [nn.Conv2d(c, c, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames).flatten(2).transpose(1, 2)


class QFormerBlock(nn.Module):
    """Self-attention over the query set → cross-attention to the frame's patches → MLP (pre-norm, residual)."""

    def __init__(self, dim: int, feat_dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads=heads)
        self.cross_attn = Attention(dim, heads=heads, context_dim=feat_dim)
        self.ff = FeedForward(dim)

    def forward(self, q: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        q = q + self.self_attn(self.norm1(q))
        q = q + self.cross_attn(self.norm2(q), feats)
        return q + self.ff(self.norm3(q))


class SequentialProjector(nn.Module):
    """Frames (B, T, 3, H, W) → visual tokens (B, T·Q, lm_dim) in frame order (see the module doc)."""

    def __init__(self, config: ProjectorConfig = ProjectorConfig()):
        super().__init__()
        self.config = config
        self.encoder = FrameEncoder(config)
        self.queries = nn.Parameter(torch.randn(config.queries, config.dim) * 0.02)
        self.blocks = nn.ModuleList(
            QFormerBlock(config.dim, config.feat_dim, config.heads) for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.to_lm = nn.Linear(config.dim, config.lm_dim)

    def frame_tokens(self, feats: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """f_Q for one frame: (B, N, feat_dim) patches, the previous frame's Q outputs (or None) → (B, Q, dim)."""
        b, q = feats.shape[0], self.config.queries
        query = self.queries[None].expand(b, -1, -1)
        if previous is not None:
            query = torch.cat([query, previous.detach()], dim=1)  # stop-gradient, as the paper
        for block in self.blocks:
            query = block(query, feats)
        return self.norm(query[:, :q])

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        if videos.dim() != 5 or videos.shape[2] != 3 or videos.shape[-1] != self.config.image_size:
            raise ValueError(
                f"videos must be (B, T, 3, {self.config.image_size}, {self.config.image_size}), got "
                f"{tuple(videos.shape)}"
            )
        b, t = videos.shape[:2]
        feats = self.encoder(videos.flatten(0, 1)).view(b, t, -1, self.config.feat_dim)
        out, previous = [], None
        for i in range(t):
            x = self.frame_tokens(feats[:, i], previous if self.config.sequential else None)
            out.append(x)
            previous = x
        return self.to_lm(torch.cat([out[i] for i in kept_frames(t, self.config.keep_every)], dim=1))
