"""MagicAnimate's three additions to a text-to-image UNet (Xu et al. 2023, arXiv 2311.16498, §3), at toy scale.

    ε_θ(z_t^{1:K}, t, I_ref, p^{1:K}) = F^T(z_t^{1:K} | t, y_a, y_p^{1:K})                       (§3.1)

- **The base** (the toy's Stable Diffusion): the primer's image model fine-tuned on Puppet frames through a
  low-rank delta (:class:`PuppetBase`, stage 0), then merged and frozen, with the null caption (MagicAnimate runs
  SD with an empty prompt).
- **Appearance encoder** y_a = F_a(I_ref, t; θ_a) (§3.2): a trainable *copy* of the base UNet — here the merged base
  plus its own low-rank delta, so it ships small — run on the **clean** reference at the current t. Its
  self-attention inputs (the normalised hidden states) at the **mid and up** blocks are stashed in a bank
  (``fusion_blocks="midup"`` in the released code) and concatenated to the keys and values of the main UNet's
  spatial self-attention at the same blocks:

      Attn = softmax(Q K′ᵀ/√d) V′,  Q = W_Q z_t,  K′ = W_K [z_t, y_a],  V′ = W_V [z_t, y_a]       (§3.2)

  through :class:`ReferenceAttention`, an attention processor (the substrate's plug-in point), so no model code
  changes. ``pooled=True`` is the ablation: the bank is averaged to **one** token per block — a global
  appearance embedding in place of the dense one (the paper's comparison with a CLIP image embedding).
- **Pose ControlNet** y_p = F_p(p^k) (§3.3): a zero-initialised copy of the base's encoder (again the merged base
  plus a low-rank delta) fed the DensePose-like IUV map through a small hint encoder whose last layer is zero; its
  per-frame residuals go through zero 1×1 convolutions into the main UNet's skips and middle block.
- **Temporal modules** (§3.1, AnimateDiff's): the substrate's motion modules (:mod:`bytecourse.diffusion.inflate`,
  zero-initialised output, identity at the start), without caption cross-attention — MagicAnimate's read no text.

Toy vs. paper: the paper's appearance encoder and ControlNet are full trainable copies; here each is the frozen base
plus a low-rank delta (LoRA, rank 8, on every conv and linear layer), so the chapter's four checkpoints fit its 4 MB
share. The spatial attention of this base exists at 8×8 and 4×4 only (the primer's ``attn_levels``), so the bank is
read at the 4×4 middle block and the 8×8 and 4×4 up blocks — every mid/up self-attention the base has.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .. import text
from ..configs import JSONConfig
from ..diffusion.attention import Attention, SDPAProcessor
from ..diffusion.inflate import InflatedVideoDenoiser, InflationConfig
from ..diffusion.lora import add_lora, merge_lora
from ..diffusion.unet import ImageDenoiser

_SDPA = SDPAProcessor()


@dataclass(frozen=True)
class MagicAnimateConfig(JSONConfig):
    base_rank: int = 8  # the stage-0 delta on the primer (every conv and linear but the caption encoder)
    appearance_rank: int = 8  # the appearance encoder's delta on its copy of the base
    control_rank: int = 8  # the ControlNet's delta on its copy of the base's encoder
    hint_channels: int = 32
    frames: int = 8  # the clip length stage 2 trains (and the default window)
    motion_points: tuple[str, ...] = ("down0", "down2", "mid", "up4", "up7")
    heads: int = 4


class ReferenceAttention:
    """The attention processor of MagicAnimate's ``ReferenceAttentionControl`` for one block ``name``.

    ``mode="write"`` (on the appearance encoder): plain self-attention, and the input hidden states are stashed in
    ``extra["bank_write"][name]``. ``mode="read"`` (on the main UNet): if ``extra["bank"]`` holds ``y_a (B, N, C)``
    for this block, the keys and values become ``W_K[z, y_a]`` and ``W_V[z, y_a]``, y_a repeated for each of the
    ``frames`` frames of its clip; ``extra["pooled"]`` averages y_a to one token first. Without a bank (CFG's
    unconditional half) it is plain self-attention."""

    def __init__(self, name: str, mode: str):
        if mode not in ("read", "write"):
            raise ValueError(f"mode must be 'read' or 'write', got {mode!r}")
        self.name, self.mode = name, mode

    def __call__(self, attn: Attention, x: torch.Tensor, context=None, extra: dict | None = None, **_) -> torch.Tensor:
        extra = extra or {}
        if self.mode == "write":
            bank = extra.get("bank_write")
            if bank is not None:
                bank[self.name] = x
            return _SDPA(attn, x, context)
        bank = extra.get("bank")
        if not bank or self.name not in bank:
            return _SDPA(attn, x, context)
        y = bank[self.name]
        if extra.get("pooled", False):
            y = y.mean(1, keepdim=True)
        if x.shape[0] % y.shape[0]:
            raise ValueError(f"{x.shape[0]} frames do not split into clips of the bank's {y.shape[0]} references")
        y = y.repeat_interleave(x.shape[0] // y.shape[0], 0).to(x.dtype)
        return _SDPA(attn, x, None, extra_kv=(attn.to_k(y), attn.to_v(y)))


def midup_points(unet: ImageDenoiser) -> list[str]:
    """The blocks whose self-attention the appearance bank feeds: the middle block and the up path."""
    return [p for p in unet.spatial_transformers() if p == "mid" or p.startswith("up")]


def set_reference_processors(unet: ImageDenoiser, mode: str) -> list[str]:
    points = midup_points(unet)
    for p in points:
        unet.spatial_transformers()[p].self_attn.set_processor(ReferenceAttention(p, mode))
    return points


class PuppetBase(nn.Module):
    """Stage 0: the primer's image model with a low-rank delta on every conv and linear layer but the caption
    encoder, trained to draw Puppet frames with the null caption. ``merged()`` folds the delta in (exact)."""

    def __init__(self, primer: ImageDenoiser, rank: int):
        super().__init__()
        self.unet = primer
        primer.requires_grad_(False)
        self.lora = add_lora(primer, rank, skip=("text",))

    def forward(self, x: torch.Tensor, t, tokens: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, tokens)

    def merged(self) -> ImageDenoiser:
        return merge_lora(self.unet, self.lora).eval().requires_grad_(False)


class PoseControlNet(nn.Module):
    """ControlNet (Zhang et al. 2023) over the base's encoder: ``forward(x_t, t, ctx, iuv) → (down, mid)`` residuals.

    A copy of the base's stem, time MLP, down path and middle block (its weights start as the base's; trained
    through a low-rank delta), a hint encoder IUV → features at the stem's resolution whose last conv is zero, and a
    zero 1×1 conv per skip feature and after the middle block — so at initialisation every residual is exactly 0
    and the main UNet is unchanged."""

    def __init__(self, base: ImageDenoiser, rank: int, hint_channels: int = 32):
        super().__init__()
        c = base.config
        self.config = c
        self.stem, self.conv_in = copy.deepcopy(base.stem), copy.deepcopy(base.conv_in)
        self.time_mlp = copy.deepcopy(base.time_mlp)
        self.down, self.mid = copy.deepcopy(base.down), copy.deepcopy(base.mid)
        for m in (self.conv_in, self.time_mlp, self.down, self.mid):
            m.requires_grad_(False)
        s = c.unshuffle
        self.hint = nn.Sequential(
            nn.PixelUnshuffle(s) if s > 1 else nn.Identity(),
            nn.Conv2d(3 * s * s, hint_channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(hint_channels, hint_channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(hint_channels, c.widths[0], 3, padding=1),
        )
        self.zero_skips = nn.ModuleList(nn.Conv2d(ch, ch, 1) for ch in base.skip_channels())
        self.zero_mid = nn.Conv2d(c.widths[-1], c.widths[-1], 1)
        for conv in (self.hint[-1], *self.zero_skips, self.zero_mid):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        copied = {name: getattr(self, name) for name in ("conv_in", "time_mlp", "down", "mid")}
        self.lora = add_lora(nn.ModuleDict(copied), rank)  # the dict is only a namespace for the delta keys

    def forward(self, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor, iuv: torch.Tensor):
        from ..diffusion.layers import timestep_embedding

        if iuv.shape != x.shape:
            raise ValueError(f"the pose map must match the frames {tuple(x.shape)}, got {tuple(iuv.shape)}")
        temb = self.time_mlp(timestep_embedding(t, self.config.widths[0]).to(x.dtype))
        h = self.conv_in(self.stem(x)) + self.hint(iuv)
        hs = [h]
        for stage in self.down:
            h = ImageDenoiser._run(stage, h, temb, ctx)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, temb), ctx), temb)
        return [z(f) for z, f in zip(self.zero_skips, hs)], self.zero_mid(h)


class MagicAnimate(nn.Module):
    """The whole model on a frozen merged base: ``eps(x (B,T,3,H,W), t (B,), reference (B,3,H,W) | None,
    iuv (B,T,3,H,W)) → ε̂``. ``temporal=True`` inflates the base with motion modules (stage 2); ``pooled`` selects
    the global-embedding ablation at run time (see :class:`ReferenceAttention`)."""

    def __init__(self, base: ImageDenoiser, config: MagicAnimateConfig = MagicAnimateConfig(), temporal: bool = False):
        super().__init__()
        self.config = config
        self.base = base.requires_grad_(False)
        self.appearance = copy.deepcopy(base)
        self.appearance_lora = add_lora(self.appearance, config.appearance_rank, skip=("text",))
        self.controlnet = PoseControlNet(base, config.control_rank, config.hint_channels)
        set_reference_processors(self.appearance, "write")
        set_reference_processors(self.base, "read")
        self.video = None
        if temporal:
            self.video = InflatedVideoDenoiser(
                self.base,
                InflationConfig(
                    frames=config.frames,
                    motion_points=config.motion_points,
                    heads=config.heads,
                    caption_cross_attention=False,
                ),
            )
            del self.video.motion_text  # MagicAnimate's motion modules read no caption
            self.video.motion_text = None
        null = torch.full((1, base.config.caption_length), text.PAD_ID, dtype=torch.long)
        self.register_buffer("null_tokens", null, persistent=False)
        self.register_buffer("null_video_tokens", torch.full((1, 24), text.PAD_ID, dtype=torch.long), persistent=False)

    def stage_parameters(self, stage: int) -> list[nn.Parameter]:
        """What stage 1 (appearance encoder + ControlNet) or stage 2 (temporal modules) trains."""
        if stage == 1:
            mods = [self.appearance_lora, self.controlnet.lora, self.controlnet.hint, self.controlnet.zero_skips]
            return [p for m in mods for p in m.parameters()] + list(self.controlnet.zero_mid.parameters())
        if stage == 2 and self.video is not None:
            return list(self.video.motion.parameters())
        raise ValueError(f"stage must be 1, or 2 on a temporal model, got {stage}")

    def delta_state_dict(self, stage: int) -> dict[str, torch.Tensor]:
        """The shipped part of a stage: stage 1 the appearance and ControlNet deltas, stage 2 the motion modules."""
        if stage == 1:
            keep = ("appearance_lora.", "controlnet.lora.", "controlnet.hint.", "controlnet.zero_")
        else:
            keep = ("video.motion.",)
        return {k: v for k, v in self.state_dict().items() if k.startswith(keep)}

    def load_delta(self, state: dict[str, torch.Tensor], stage: int) -> None:
        own = self.delta_state_dict(stage)
        if set(own) != set(state):
            raise ValueError(
                f"stage-{stage} delta does not fit this model: missing {sorted(set(own) - set(state))[:4]}, "
                f"unexpected {sorted(set(state) - set(own))[:4]}"
            )
        self.load_state_dict(state, strict=False)

    def bank(self, reference: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """y_a: the appearance encoder's mid/up self-attention inputs on the clean reference at level t."""
        bank: dict[str, torch.Tensor] = {}
        self.appearance(reference, t, self.null_tokens.expand(reference.shape[0], -1), extra={"bank_write": bank})
        return bank

    def eps(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        reference: torch.Tensor | None,
        iuv: torch.Tensor,
        *,
        pooled: bool = False,
        bank: dict | None = None,
        temporal: bool = True,
    ) -> torch.Tensor:
        """ε̂ for clips ``x (B,T,3,H,W)`` at levels ``t (B,)``. ``reference=None`` (and no ``bank``) runs without
        the appearance bank (CFG's unconditional half); the pose residuals are applied either way. ``temporal=False``
        skips the motion modules of a temporal model (the without-temporal-modules ablation)."""
        if x.dim() != 5 or iuv.shape != x.shape:
            raise ValueError(f"x and iuv must both be (B, T, 3, H, W); got {tuple(x.shape)} and {tuple(iuv.shape)}")
        b, frames = x.shape[:2]
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(b) if t.dim() == 0 else t
        if bank is None and reference is not None:
            if reference.shape != (b, *x.shape[2:]):
                raise ValueError(f"reference must be {(b, *x.shape[2:])}, got {tuple(reference.shape)}")
            bank = self.bank(reference, t)
        extra = {"bank": bank or {}, "pooled": pooled}
        tf = t.repeat_interleave(frames)
        flat = x.flatten(0, 1)
        ctx = self.base.text(self.null_tokens).expand(flat.shape[0], -1, -1)
        residuals = self.controlnet(flat, tf, ctx, iuv.flatten(0, 1))
        if self.video is not None and temporal:
            tokens = self.null_video_tokens.expand(b, -1)
            return self.video(x, t, tokens, extra=extra, residuals=residuals)
        out = self.base(
            flat, tf, self.null_tokens.expand(flat.shape[0], -1), frames=frames, extra=extra, residuals=residuals
        )
        return out.view_as(x)
