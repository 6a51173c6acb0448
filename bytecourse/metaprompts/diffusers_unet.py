"""The same mechanism on a 🤗 diffusers ``UNet2DConditionModel`` — the layout of the paper's Stable Diffusion.

:class:`DiffusersBackbone` is a drop-in for :class:`~bytecourse.metaprompts.models.UNetBackbone`:

- the **meta prompts** enter as ``encoder_hidden_states`` (every cross-attention's context);
- the **learnt time vector** of each loop replaces the output of ``unet.time_embedding`` (a forward hook returns
  it), as the paper's code replaces SD's ``time_embed`` output;
- the **features** are the outputs of the up blocks, coarse → fine (the brief's mapping: SD's ``output_blocks[1]``,
  ``[4]``, ``[7]`` and the final block sit inside ``up_blocks[0]``–``[3]``); the last four are used;
- **recurrent refinement**: from the second loop on the input is ``unet(...).sample``, i.e. ``conv_norm_out →
  conv_act → conv_out`` of the last features — the paper's OutProj.

The course's own UNet is used for the trained arms (a diffusers UNet of the same width is ~4× slower on a 2-core
CPU); this adapter shows the mechanism carries over unchanged, and is tested on a tiny random config.
"""

from __future__ import annotations

import torch
from torch import nn

from .models import FEATURE_POINTS, MetaPrompts


class DiffusersBackbone(nn.Module):
    def __init__(self, unet, n_prompts: int = 16, loops: int = 3, per_loop_prompts: bool = False):
        super().__init__()
        if len(unet.up_blocks) < 4:
            raise ValueError(
                f"the UNet needs at least 4 up blocks to give 4 feature scales, has {len(unet.up_blocks)}"
            )
        self.unet = unet
        self.loops = loops
        self.prompt_dim = unet.config.cross_attention_dim
        self.prompts = MetaPrompts(n_prompts, self.prompt_dim, loops, per_loop_prompts)
        with torch.no_grad():  # τ_i starts as the UNet's own embedding of t = 0 (a clean image)
            t0 = unet.time_embedding(unet.time_proj(torch.zeros(1)))
        self.time = nn.Parameter(t0.repeat(loops, 1))
        self._time_now: torch.Tensor | None = None
        self._feats: list[torch.Tensor] = []
        unet.time_embedding.register_forward_hook(self._replace_time)
        self._blocks = list(unet.up_blocks)[-4:]
        for block in self._blocks:
            block.register_forward_hook(self._keep)
        size = unet.config.sample_size
        with torch.no_grad():  # one dry run gives every feature's channels and stride
            feats = self(torch.zeros(1, unet.config.in_channels, size, size), 1)
        self.channels = {k: v.shape[1] for k, v in feats.items()}
        self.strides = {k: size // v.shape[-1] for k, v in feats.items()}

    def _replace_time(self, _module, _inputs, out: torch.Tensor) -> torch.Tensor:
        return out if self._time_now is None else self._time_now.to(out.dtype).expand_as(out)

    def _keep(self, _module, _inputs, out) -> None:
        self._feats.append(out[0] if isinstance(out, tuple) else out)

    def forward(self, x: torch.Tensor, loops: int | None = None) -> dict[str, torch.Tensor]:
        loops = self.loops if loops is None else loops
        if not 1 <= loops <= self.loops:
            raise ValueError(f"loops must be in 1..{self.loops}, got {loops}")
        z = x
        try:
            for i in range(loops):
                self._feats = []
                self._time_now = self.time[i : i + 1]
                ctx = self.prompts(i)[None].expand(x.shape[0], -1, -1)
                z = self.unet(z, 0, encoder_hidden_states=ctx).sample
        finally:
            self._time_now = None
        return dict(zip(FEATURE_POINTS, self._feats))

    def head_prompts(self) -> torch.Tensor:
        return self.prompts(self.loops - 1)
