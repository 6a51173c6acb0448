"""Guidance losses on a clean-image estimate x̂₀ (model space [−1, 1], shape ``(B, 3, H, W)``).

Each returns one loss **per sample** ``(B,)`` so that guidance can normalise its step per sample and the
samplers can sum them (the samples are independent, so ∇ of the sum is every sample's own gradient).

- :class:`GramStyleLoss` — SAG's style loss (§4.1; the official code uses CLIP ViT features): the Frobenius
  distance between Gram matrices of features of x̂₀ and of a reference image, G = F Fᵀ / (HW) for the
  (C, HW) feature map F. Our features: a *fixed random* two-layer conv net (random features carry texture and
  colour statistics well enough for style transfer; Ulyanov et al. 2017, He et al. 2016 "random features").
- :class:`AttributeLoss` — cross-entropy of the frozen clean-image :mod:`classifier` towards a target class
  ("put the object on the left", "make it red"), FreeDoM / Universal Guidance's classifier energy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .classifier import HEADS, POSITION_NAMES, ShapesClassifier


class RandomFeatures(nn.Module):
    """Fixed random conv features (seeded, never trained): conv3×3(3→c) – ReLU – conv3×3 stride 2 (c→2c) – ReLU."""

    def __init__(self, channels: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(channels, 3, 3, 3, generator=g) * (2 / 27) ** 0.5, requires_grad=False)
        self.w2 = nn.Parameter(
            torch.randn(2 * channels, channels, 3, 3, generator=g) * (2 / (9 * channels)) ** 0.5, requires_grad=False
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h1 = F.relu(F.conv2d(x, self.w1.to(x.dtype), padding=1))
        h2 = F.relu(F.conv2d(h1, self.w2.to(x.dtype), stride=2, padding=1))
        return [h1, h2]


def gram(features: torch.Tensor) -> torch.Tensor:
    """G = F Fᵀ / (H W) for features ``(B, C, H, W)`` → ``(B, C, C)``."""
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (h * w)


class GramStyleLoss(nn.Module):
    """‖G(φ(x̂₀)) − G(φ(x_ref))‖_F summed over the feature layers (SAG's `get_gram_matrix_residual`, our features)."""

    def __init__(self, reference: torch.Tensor, channels: int = 16, seed: int = 0):
        super().__init__()
        if reference.dim() == 3:
            reference = reference[None]
        if reference.dim() != 4 or reference.shape[:2] != (1, 3):
            raise ValueError(f"reference must be one image (3, H, W) in model space, got {tuple(reference.shape)}")
        self.features = RandomFeatures(channels, seed)
        with torch.no_grad():
            self.register_buffer(
                "targets_flat", torch.cat([gram(f).flatten(1) for f in self.features(reference.float())], 1)
            )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        grams = torch.cat([gram(f).flatten(1) for f in self.features(x0)], 1)
        return (grams - self.targets_flat.to(grams.dtype)).norm(dim=1)


class AttributeLoss(nn.Module):
    """−log p(target | x̂₀) under one head of the frozen classifier (per sample)."""

    def __init__(self, classifier: ShapesClassifier, head: str, target: int | str):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}")
        if isinstance(target, str):
            from ..text import COLOUR_NAMES, SHAPE_NAMES

            names = {"colour": COLOUR_NAMES, "shape": SHAPE_NAMES, "position": POSITION_NAMES}[head]
            if target not in names:
                raise ValueError(f"target for head {head!r} must be one of {list(names)}, got {target!r}")
            target = list(names).index(target)
        if not 0 <= int(target) < HEADS[head]:
            raise ValueError(f"target must be in [0, {HEADS[head] - 1}] for head {head!r}, got {target}")
        self.classifier, self.head, self.target = classifier, head, int(target)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(x0)[self.head].float()
        return -F.log_softmax(logits, dim=1)[:, self.target]

    @torch.no_grad()
    def hit(self, x0: torch.Tensor) -> torch.Tensor:
        """Whether the classifier's top class is the target (a cheap proxy; the oracle decides in the tables)."""
        return self.classifier(x0)[self.head].argmax(1) == self.target
