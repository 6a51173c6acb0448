"""MagicAnimate's appearance bank and pose ControlNet on a diffusers ``UNet2DConditionModel`` — the same mechanism
as :mod:`bytecourse.magicanimate.models`, through diffusers' own plug-in points, for learners who move to Stable
Diffusion.

- **The bank** goes through attention processors on the ``attn1`` (self-attention) layers of the mid and up blocks,
  as the released ``ReferenceAttentionControl`` does with ``fusion_blocks="midup"``: on the appearance UNet (a copy
  of the denoiser) :class:`ReferenceAttnProcessor` in ``"write"`` mode stashes the normalised hidden states; on the
  denoiser in ``"read"`` mode it attends over ``[z, y_a]``.
- **The ControlNet** is diffusers' own ``ControlNetModel.from_unet`` (a copy of the encoder with zero convolutions);
  its residuals enter through ``down_block_additional_residuals`` / ``mid_block_additional_residual``.

Both leave the denoiser unchanged at initialisation when no reference is given (``tests/test_magicanimate.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ReferenceBank:
    """The stash shared by the writer and reader processors: ``store[name] = (B, N, C)`` hidden states."""

    def __init__(self):
        self.store: dict[str, torch.Tensor] = {}

    def clear(self) -> None:
        self.store.clear()


class ReferenceAttnProcessor:
    """A diffusers attention processor for ``attn1``: plain scaled-dot-product self-attention, plus the bank."""

    def __init__(self, name: str, mode: str, bank: ReferenceBank):
        if mode not in ("read", "write"):
            raise ValueError(f"mode must be 'read' or 'write', got {mode!r}")
        self.name, self.mode, self.bank = name, mode, bank

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **_):
        if hidden_states.dim() != 3:
            raise ValueError("ReferenceAttnProcessor expects (B, N, C) hidden states (a transformer block's attn1)")
        context = hidden_states
        if self.mode == "write":
            self.bank.store[self.name] = hidden_states
        elif self.name in self.bank.store:
            y = self.bank.store[self.name]
            if hidden_states.shape[0] % y.shape[0]:
                raise ValueError(f"{hidden_states.shape[0]} frames do not split into the bank's {y.shape[0]} clips")
            y = y.repeat_interleave(hidden_states.shape[0] // y.shape[0], 0).to(hidden_states.dtype)
            context = torch.cat([hidden_states, y], 1)
        b = hidden_states.shape[0]
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        head_dim = k.shape[-1] // attn.heads

        def split(x):
            return x.view(b, -1, attn.heads, head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=attention_mask)
        out = out.transpose(1, 2).reshape(b, -1, attn.heads * head_dim).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def attach_reference(unet, mode: str, bank: ReferenceBank) -> list[str]:
    """Put :class:`ReferenceAttnProcessor` on every mid/up ``attn1`` of ``unet`` (diffusers' default processor
    elsewhere); returns the processor names that read or write the bank."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    procs, used = {}, []
    for name in unet.attn_processors:
        if ".attn1." in name and (name.startswith("mid_block") or name.startswith("up_blocks")):
            procs[name] = ReferenceAttnProcessor(name.removesuffix(".processor"), mode, bank)
            used.append(name)
        else:
            procs[name] = AttnProcessor2_0()
    unet.set_attn_processor(procs)
    return used


def pose_controlnet(unet, conditioning_channels: int = 3, embedding_channels: tuple[int, ...] = (16, 32, 96, 256)):
    """diffusers' ``ControlNetModel.from_unet``: the denoiser's encoder copied, zero convolutions out — MagicAnimate's
    DensePose ControlNet for a diffusers UNet (``embedding_channels``: the condition encoder's widths; each after the
    first halves the resolution, so the IUV map is 2^(len − 1) × the UNet's sample size)."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(
        unet, conditioning_channels=conditioning_channels, conditioning_embedding_out_channels=embedding_channels
    )
