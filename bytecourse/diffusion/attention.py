"""Attention with a pluggable processor (the diffusers pattern), always through
``torch.nn.functional.scaled_dot_product_attention``.

Later chapters change attention without touching model code: a processor may add keys/values
(MagicAnimate's appearance features), or mask/rewrite logits (Vista-LLaMA), and the video block exposes a
slot between spatial self-attention and caption cross-attention (Boximator's box layer).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class AttentionProcessor(Protocol):
    def __call__(
        self, attn: Attention, x: torch.Tensor, context: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor: ...


class Attention(nn.Module):
    """Multi-head attention ``softmax(q kᵀ/√d) v`` over ``x (B, N, dim)`` and an optional ``context (B, M, ctx)``.

    ``forward`` delegates to ``self.processor`` so that chapters can swap the computation in place.
    """

    def __init__(self, dim: int, context_dim: int | None = None, heads: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.processor: AttentionProcessor = SDPAProcessor()

    def set_processor(self, processor: AttentionProcessor) -> None:
        self.processor = processor

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return self.processor(self, x, context, **kwargs)


class SDPAProcessor:
    """The default processor. ``extra_kv=(k, v)`` (each ``(B, M', dim)``, already projected) are appended to
    the keys and values — the hook for reference-feature attention; ``attn_mask`` is passed to SDPA."""

    def __call__(
        self,
        attn: Attention,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        extra_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        **_: object,
    ) -> torch.Tensor:
        ctx = x if context is None else context
        q, k, v = attn.to_q(x), attn.to_k(ctx), attn.to_v(ctx)
        if extra_kv is not None:
            k = torch.cat([k, extra_kv[0]], dim=1)
            v = torch.cat([v, extra_kv[1]], dim=1)
        out = F.scaled_dot_product_attention(
            attn.split_heads(q), attn.split_heads(k), attn.split_heads(v), attn_mask=attn_mask
        )
        return attn.to_out(attn.merge_heads(out))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__(nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim))
