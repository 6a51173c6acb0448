"""A compact caption-conditioned image denoiser ε_θ(x_t, t, caption).

A UNet of ResBlocks with self- and cross-attention at the lower resolutions, run behind a pixel-unshuffle
stem: a 32×32×3 image becomes 16×16×12 before the first convolution, which makes it ~4× cheaper than a
diffusers ``UNet2DConditionModel`` of the same width — fast enough to train on a 2-core CPU
(``shared/design/feasibility.md``). Same class with bigger numbers is the GPU configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .layers import CaptionEncoder, JSONConfig, ResBlock, SpatialTransformer, norm, timestep_embedding


@dataclass(frozen=True)
class UNetConfig(JSONConfig):
    image_size: int = 32
    channels: int = 3
    unshuffle: int = 2
    widths: tuple[int, ...] = (64, 80, 80)
    attn_levels: tuple[int, ...] = (1, 2)
    layers_per_level: int = 1
    heads: int = 4
    text_dim: int = 64
    text_layers: int = 2
    caption_length: int = 12
    dropout: float = 0.0


class ImageDenoiser(nn.Module):
    """ε-prediction network. ``forward(x (B,C,H,W), t (B,) or scalar, tokens (B,L)) → ε̂ (B,C,H,W)``."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        c0 = config.widths[0]
        temb_dim = 2 * c0
        self.time_mlp = nn.Sequential(nn.Linear(c0, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.text = CaptionEncoder(config.text_dim, config.caption_length, config.text_layers, config.heads)
        s = config.unshuffle
        self.stem = nn.PixelUnshuffle(s) if s > 1 else nn.Identity()
        self.conv_in = nn.Conv2d(config.channels * s * s, c0, 3, padding=1)

        self.down = nn.ModuleList()
        skips = [c0]
        ch = c0
        for level, width in enumerate(config.widths):
            for _ in range(config.layers_per_level):
                self.down.append(self._stage(ch, width, temb_dim, level))
                ch = width
                skips.append(ch)
            if level < len(config.widths) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList(
            [
                ResBlock(ch, ch, temb_dim, config.dropout),
                SpatialTransformer(ch, config.text_dim, config.heads),
                ResBlock(ch, ch, temb_dim, config.dropout),
            ]
        )
        self.up = nn.ModuleList()
        for level in reversed(range(len(config.widths))):
            width = config.widths[level]
            for _ in range(config.layers_per_level + 1):
                self.up.append(self._stage(ch + skips.pop(), width, temb_dim, level))
                ch = width
            if level > 0:
                self.up.append(
                    nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1))
                )
        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, config.channels * s * s, 3, padding=1))
        self.unstem = nn.PixelShuffle(s) if s > 1 else nn.Identity()
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _stage(self, cin: int, cout: int, temb_dim: int, level: int) -> nn.ModuleList:
        mods = [ResBlock(cin, cout, temb_dim, self.config.dropout)]
        if level in self.config.attn_levels:
            mods.append(SpatialTransformer(cout, self.config.text_dim, self.config.heads))
        return nn.ModuleList(mods)

    @staticmethod
    def _run(stage: nn.Module, h: torch.Tensor, temb: torch.Tensor, ctx: torch.Tensor, **attn_kwargs) -> torch.Tensor:
        if isinstance(stage, nn.ModuleList):
            for m in stage:
                h = m(h, temb) if isinstance(m, ResBlock) else m(h, ctx, **attn_kwargs)
            return h
        return stage(h)

    def stage_points(self) -> list[tuple[str, int, int]]:
        """The places ``forward``'s ``after_stage`` is called, in order: ``(name, channels, downsampling)``.

        ``"stem"`` after the input convolution, ``"down{i}"``/``"up{i}"`` after each ResBlock(+transformer)
        stage of the down/up path (``i`` its index in ``self.down``/``self.up``), ``"mid"`` after the middle
        block. Video models built on this one (:mod:`bytecourse.diffusion.inflate`) put their motion modules
        and first-frame features at these points."""
        s = self.config.unshuffle
        points, level = [("stem", self.config.widths[0], s)], 0
        for i, stage in enumerate(self.down):
            if isinstance(stage, nn.ModuleList):
                points.append((f"down{i}", stage[0].conv2.out_channels, s * 2**level))
            else:
                level += 1
        points.append(("mid", self.mid[2].conv2.out_channels, s * 2**level))
        for i, stage in enumerate(self.up):
            if isinstance(stage, nn.ModuleList):
                points.append((f"up{i}", stage[0].conv2.out_channels, s * 2**level))
            else:
                level -= 1
        return points

    def skip_channels(self) -> list[int]:
        """Channels of the skip features the up path reads (stem, then each down stage and downsampler): the
        shapes a ControlNet's ``residuals`` must have."""
        chans = [self.config.widths[0]]
        for stage in self.down:
            chans.append(stage[0].conv2.out_channels if isinstance(stage, nn.ModuleList) else stage.out_channels)
        return chans

    def spatial_transformers(self) -> dict[str, SpatialTransformer]:
        """Every :class:`SpatialTransformer` by the stage point it belongs to (``"down3"``, ``"mid"``, …): the
        attention processors and ``post_spatial`` slots that chapters plug into."""
        out = {}
        for prefix, stages in (("down", self.down), ("up", self.up)):
            for i, stage in enumerate(stages):
                if isinstance(stage, nn.ModuleList):
                    out |= {f"{prefix}{i}": m for m in stage if isinstance(m, SpatialTransformer)}
        out["mid"] = self.mid[1]
        return out

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float | int,
        tokens: torch.Tensor | None,
        *,
        after_stage: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
        frames: int = 1,
        extra: dict | None = None,
        context: torch.Tensor | None = None,
        time_embedding: torch.Tensor | None = None,
        residuals: tuple[list[torch.Tensor], torch.Tensor] | None = None,
        stem_head: tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """ε̂(x, t, c): ``tokens`` is a caption ``(B, L)`` of token ids, or its embedding ``(B, L, text_dim)`` directly.

        ``after_stage(name, h) → h`` (optional) is called at every :meth:`stage_points` entry; ``frames`` and
        ``extra`` are passed on to the attention processors and ``post_spatial`` layers. With the defaults the
        image model runs exactly as trained.

        Perception use (chapter 03, Meta Prompts): ``context (B, N, text_dim)`` of any length N replaces the caption
        as every cross-attention's keys and values (``tokens`` is then ignored and may be None), and
        ``time_embedding (B or 1, 2·widths[0])`` replaces the sinusoidal + MLP embedding of ``t``.

        ControlNet use (chapter 05, MagicAnimate): ``residuals = (down, mid)`` are added to the skip connections
        (``down[i]`` to the i-th skip feature: the stem, then every down stage and downsampler, as
        :meth:`skip_channels` lists them) and to the middle block's output, as diffusers'
        ``down_block_additional_residuals`` / ``mid_block_additional_residual``.

        Super-resolution use (chapter 06, MagicVideo-V2's V2V stage): ``stem_head = (stem, head)`` replaces the input
        stem (pixel-unshuffle + ``conv_in``) and the output head (``out`` + pixel-shuffle), so that a larger image, or
        one with extra conditioning channels, enters the same backbone: ``stem(x)`` must give the backbone's
        ``(B, widths[0], image_size/unshuffle, image_size/unshuffle)`` features, and ``head`` maps the last up
        features to the output."""
        config = self.config
        if stem_head is not None:
            if x.dim() != 4:
                raise ValueError(f"x must be (B, C, H, W), got {tuple(x.shape)}")
        elif (
            x.dim() != 4
            or x.shape[1] != config.channels
            or x.shape[-1] != config.image_size
            or x.shape[-2] != config.image_size
        ):
            raise ValueError(
                f"x must be (B, {config.channels}, {config.image_size}, {config.image_size}), got {tuple(x.shape)}"
            )
        if time_embedding is not None:
            temb = time_embedding.to(x.dtype).expand(x.shape[0], -1)
        else:
            t = torch.as_tensor(t, device=x.device)
            if t.dim() == 0:
                t = t.expand(x.shape[0])
            temb = self.time_mlp(timestep_embedding(t, config.widths[0]).to(x.dtype))
        if context is not None:
            if context.dim() != 3 or context.shape[0] not in (1, x.shape[0]) or context.shape[2] != config.text_dim:
                raise ValueError(f"context must be (B, N, {config.text_dim}), got {tuple(context.shape)}")
            ctx = context.to(x.dtype).expand(x.shape[0], -1, -1)
        elif (
            tokens.is_floating_point()
        ):  # a conditioning embedding c = text(tokens), e.g. one being optimised (AdjointDPM)
            want = (x.shape[0], config.caption_length, config.text_dim)
            if tuple(tokens.shape) != want:
                raise ValueError(f"a conditioning embedding must be {want}, got {tuple(tokens.shape)}")
            ctx = tokens.to(x.dtype)
        else:
            ctx = self.text(tokens)
        hook = after_stage or (lambda name, h: h)
        kw = {"frames": frames, "extra": extra}
        h = hook("stem", stem_head[0](x) if stem_head is not None else self.conv_in(self.stem(x)))
        hs = [h]
        for i, stage in enumerate(self.down):
            h = self._run(stage, h, temb, ctx, **kw)
            if isinstance(stage, nn.ModuleList):
                h = hook(f"down{i}", h)
            hs.append(h)
        h = self.mid[0](h, temb)
        h = self.mid[1](h, ctx, **kw)
        h = hook("mid", self.mid[2](h, temb))
        if residuals is not None:
            down_res, mid_res = residuals
            if len(down_res) != len(hs):
                raise ValueError(f"residuals: {len(hs)} skip residuals expected, got {len(down_res)}")
            hs = [a + r for a, r in zip(hs, down_res)]
            h = h + mid_res
        for i, stage in enumerate(self.up):
            if isinstance(stage, nn.ModuleList):
                h = hook(f"up{i}", self._run(stage, torch.cat([h, hs.pop()], dim=1), temb, ctx, **kw))
            else:
                h = self._run(stage, h, temb, ctx)
        return stem_head[1](h) if stem_head is not None else self.unstem(self.out(h))
