"""Chapter 03 — Meta Prompts (Wan et al., arXiv 2312.14733): learnable prompts turn a diffusion UNet into a perception
model.

- :mod:`.pretrain` — the course's diffusion model fine-tuned (as a diffusion model, LoRA) on the perception world;
- :mod:`.models` — meta prompts, the learnt time vectors, recurrent refinement, re-arrangement, the heads and losses,
  and the plain conv control;
- :mod:`.diffusers_unet` — the same mechanism on a diffusers ``UNet2DConditionModel``;
- :mod:`.train` / :mod:`.evaluate` — the ablation arms over training seeds, the paper's metrics and computed verdicts;
- :mod:`.widget` — the chapter's explorer; :mod:`.solutions` — its exercises.
"""

from .models import MetaPrompts, MetaPromptsConfig, MetaPromptsModel, UNetBackbone, rearrange, silog_loss

__all__ = ["MetaPrompts", "MetaPromptsConfig", "MetaPromptsModel", "UNetBackbone", "rearrange", "silog_loss"]
