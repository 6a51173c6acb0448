"""Chapter 03 — Meta Prompts (Wan et al., arXiv 2312.14733): learnable prompts turn a diffusion UNet into a perception
model."""
