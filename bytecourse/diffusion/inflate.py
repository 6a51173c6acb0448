"""Inflating the primer's text-to-image model into a video model with motion modules (AnimateDiff-style).

AnimateDiff (Guo et al. 2024), ModelScope, MagicVideo-V2 and MagicAnimate all start from a pretrained
text-to-image UNet and *inflate* it: every spatial layer runs on each frame of a clip as on an image, by
folding time into the batch, ``(B, T, C, H, W) → (B·T, C, H, W)``; between the spatial stages, new
**motion modules** mix information across the T frames at each spatial location,
``(B·T, C, H, W) → (B·H·W, T, C)``. Each motion module is residual with a zero-initialised output
projection, so at initialisation the inflated model *is* the image model applied frame by frame
(``tests/test_inflate.py`` checks it), and training the motion modules only adds temporal structure to what the
image model already draws.

    h ← h + W_out · MotionTransformer(W_in · GroupNorm(h)),   W_out = 0 at initialisation

The motion transformer (AnimateDiff's ``TemporalTransformer3DModel``: two temporal self-attentions and a
feed-forward, sinusoidal frame positions added before each attention) gets one addition here, explained
below: a cross-attention to the full caption between its two temporal attentions.

**How long captions and motion words enter.** The primer's caption encoder has 12 positions and never saw
a motion word, while Motion captions run to 23 words ("a red circle enters from the left and a blue square
bounces"). Rather than stretch the primer's encoder (a longer position table and untrained word embeddings
would change what its frozen cross-attentions read, so the spatial layers would no longer draw what they
learnt), the caption is *routed*:

- the spatial layers read the caption's **object phrases** ("a red circle and a blue square", see
  :func:`object_tokens`) through the primer's own encoder — exactly the distribution they were trained on;
- the motion modules read the **whole caption** through a new 24-position caption encoder (its word
  embeddings start as a copy of the primer's, so colours and shapes start meaningful; positions and the
  motion words are learnt) by a cross-attention whose queries carry the token's frame index and its 2-D
  position in the feature map — "moves right" must become "be at the left early and at the right late",
  which needs both *when* and *where*. (The primer's spatial attention has no position encoding; the motion
  modules' absolute positions are our addition, as are the caption cross-attentions: AnimateDiff's motion
  modules read no text because SD's CLIP encoder already knows motion words.)

**Spatio-temporal attention** (optional, per motion module: ``InflationConfig.spatiotemporal_points``). A plain
motion module is local in space: the token at one location reads that location on the other frames and the
caption, never another location (``tests/test_inflate.py`` checks it). "Moves right" relates *different*
locations on different frames — the object is here now because it was to the left before — and measured on the
stage-2 model trained without it, the model did not read the direction word at all (its x̂₀ error with "left" and
"right" swapped equals the true caption's at every noise level: ``video_eval.direction_word_gap``). At the 8×8 and
4×4 levels (≤ 512 tokens a clip) a module may therefore add one self-attention over all T·H·W tokens of a clip,
queries and keys carrying the frame and 2-D positions — full 3-D attention as in VDM's and Latte's
spatio-temporal blocks, kept to the coarse levels where it is cheap. Its output projection starts at zero, so a
stage can add it to already trained modules without changing them. Measured: with it (the shipped stage 2,
3,500 steps) the model still does not read the direction word (swapping it moves the x̂₀ error by at most 0.3 %,
at t = 900), so spatial reach was not what held direction back at this budget.

**Positions in the tokens** (``InflationConfig.stream_positions``, an option; off in the shipped model). AnimateDiff's
motion module adds its sinusoidal frame positions to the hidden states themselves (its ``pos_encoder``), so queries,
keys, *values* and the feed-forward all see them; this module adds them to the queries and keys only. Then no token
holds its own frame or place: with the caption away, the same features give the same output on every frame and at
every location, and a token's position only chooses which caption words it reads, by a score that is a sum of a
frame term and a place term (``tests/test_inflate.py``). "Moves right" asks for a product of the two — at the left on
early frames *and* at the right on late ones. With the option on, positions are added to the tokens after
``proj_in`` and the feed-forward after the caption cross-attention can form that product.

**One caption reading per frame** (``InflationConfig.frame_captions``, an option; off in the shipped model): the
whole caption is encoded once per frame with the frame's sinusoidal position added to every token, and each frame's
queries read only their own frame's encoding. The caption transformer, which composes words anyway, can then turn
"moves right" into "at the left" on frame 0 and "at the right" on the last, leaving the cross-attention only a
place per frame, which a score additive in position can say. Cost: the caption encoder runs T times on 24 tokens.

Measured, each as a fresh stage 1 (3,800 steps, 43 min), against the shipped model (the default options, two
stages, 113 min). On the first (positions in the tokens), "moves right" minus "moves left" moved x̂₀'s red mass (same
x_t, t = 950 to 800) to the right on *every* frame, the word read as a place ("enters from the right" and "leaves to
the right" share it), where real clips differ mostly on the early frames and with the other sign: that measurement
led to the second option. Neither option made the model read the direction
word: with the direction swapped, x̂₀'s error at t = 900 moved by 0.3 % (positions in the tokens) and 0.14 % (+ one
reading per frame). Direction accuracy on evaluation seed 0 (24 clips, DDIM 20) at CFG 2 / 8 was 0.458 / 0.542 and
0.500 / 0.458, against 0.458 / 0.667 for the shipped model. So at this budget neither expressiveness was what held
direction back. The options stay for a longer run, e.g. on a GPU.

**A clean-clip head for the high-noise levels** (``InflationConfig.x0_head``, an option). The primer predicts ε, and
the course's cosine schedule ends at ᾱ_999 = 2.4·10⁻⁹, so at the levels where a clip's layout — and its motion — is
decided, the clean estimate x̂₀^ε = (x_t − √(1−ᾱ)·ε̂)/√ᾱ multiplies every error in ε̂ by √((1−ᾱ)/ᾱ): 13 at t = 950,
2·10⁴ at t = 999. Measured on the shipped two-stage model (32 real linear/curved clips): x̂₀'s error is 0.18 (0.156
clipped) at t = 950 and 1.1 (clipped) at t = 999, against 0.070 for the caption-blind mean clip, so DDIM's first steps
write clipped noise into x_t and the later steps read the layout from it (same noise, "moves left" and "moves right"
give the same displacement). Lin et al. (2024, "Common diffusion noise schedules and sample steps are flawed") name the
cure for a schedule that reaches SNR ≈ 0: predict v instead of ε. Their v-prediction, written for x̂₀, is a blend by
noise level,

    x̂₀ = ᾱ·x̂₀^ε + (1 − ᾱ)·x̂₀^direct,

and this option builds it on the primer without giving up its ε head: x̂₀^direct = g(t)·clip(x̂₀^ε) + Δ, with g(t) = 1
+ tanh(u·emb(t)), u = 0 at the start, and Δ zero-initialised — either a convolution on the last decoder features h
(``"conv"``), or :class:`CleanClipHead` (``"attention"``), which reads h, the whole caption and the noise level with
frame and place in its tokens. At initialisation x̂₀ = x̂₀^ε wherever x̂₀^ε is inside [−1, 1], so the model is still
the image model frame by frame; training can turn g down and Δ up where ε̂ cannot carry the clip. The model still
returns ε̂ = (x_t − √ᾱ·x̂₀)/√(1−ᾱ) (computed in float32), so every sampler and chapter uses it unchanged, and the
v-weighted ε-loss is then exactly ‖x̂₀ − x₀‖²/(1−ᾱ): no level's weight needs a cap.

Measured (not shipped; same 32 clips and noise as above): a third stage on the shipped model with the ``"conv"`` head,
every weight outside the image model trained (2,400 steps, 42 min, half the levels from t ≥ 700), brought x̂₀'s error
at t = 999 / 950 / 900 / 800 from 1.13 / 0.156 / 0.058 / 0.022 to 0.074 / 0.052 / 0.026 / 0.014 (the mean clip: 0.070)
and the direction word's share of it at t = 950 from 0.0004 to 0.0040 (the caption's objects: 0.020). Sampled
(evaluation seed 0, 24 clips, DDIM 20) at CFG 2 / 4 / 8: direction 0.583 / 0.625 / 0.667 against stage 2's 0.458 /
0.500 / 0.667, identity 0.826 / 0.833 / 0.833 against 0.783 / 0.870 / 0.958; at CFG 8 linear motion 3/8 against 1/8,
but entering 3/5 against 5/5. So the first steps now draw a clip instead of clipped noise, but the direction word is
still worth little to the model: 0.004 at t = 950, where from the caption alone (t = T) the direction-conditioned mean
clip is 0.018 better than the one with the direction swapped (errors 0.056 / 0.074, means over 20,000 world clips).

The ``"attention"`` head, trained alone on the frozen stage-2 model (everything else kept, so the chapters built on
that model would be unaffected; 0.49 s a step), did not read direction either: after 2,500 steps (20 min, stopped
there) x̂₀'s error at t = 999 / 950 / 900 / 800 was 0.069 / 0.063 / 0.045 / 0.021, the direction word worth 0.0001 at
t = 950. The first run's 0.052 at t = 950 beats what the caption alone gives at t = T (0.056 with the direction, 0.062
with the object words only) through what x_t shows, not through the direction word. So the high-noise
parameterisation is fixed (the first run) and the motion modules' reach was measured before (the options above); the
suspect left is the training signal for the direction word at the high-noise levels, at this budget. A longer
stage, e.g. on a GPU, is the next measurement; the shipped model stays the two-stage one.

**Extension points** for the video chapters: every :class:`SpatialTransformer` keeps its ``post_spatial``
slot and its swappable attention processors (``extra`` and ``frames`` reach them); the 16×16 level, which
has no spatial attention in the primer, gets a ``post_spatial`` slot at the input of its motion module
(:meth:`InflatedVideoDenoiser.post_spatial_slots`, Boximator's box layer); ``first_frame`` conditioning (I2V)
adds zero-initialised features of a given clean frame to every frame after the stem.

**LoRA** (Hu et al. 2022): the second training stage may tune the spatial attention projections through
low-rank deltas ``W x + (α/r)·B A x`` (``B = 0`` at initialisation), kept in their own module so that the
shipped checkpoint holds only what differs from the primer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import text
from .attention import Attention, FeedForward
from .layers import CaptionEncoder, JSONConfig, norm, timestep_embedding
from .lora import LoRA
from .unet import ImageDenoiser

_COLOUR_IDS = [text.WORD_TO_ID[w] for w in text.COLOUR_NAMES]
_SHAPE_IDS = [text.WORD_TO_ID[w] for w in text.SHAPE_NAMES]


def object_tokens(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """The object phrases of captions ``(B, L)`` as a Shapes caption ``(B, length)``: "a red circle moves left
    and a blue square bounces" → "a red circle and a blue square". The null caption stays null, and a caption
    that is already a Shapes caption comes back unchanged (up to padding)."""
    if tokens.dim() != 2 or tokens.is_floating_point():
        raise ValueError(f"tokens must be (B, L) token ids, got {tuple(tokens.shape)} {tokens.dtype}")
    out = torch.full((tokens.shape[0], length), text.PAD_ID, dtype=torch.long)
    a, and_ = text.WORD_TO_ID["a"], text.WORD_TO_ID["and"]
    for b, row in enumerate(tokens.tolist()):
        ids: list[int] = []
        for w0, w1 in zip(row[:-1], row[1:]):
            if w0 in _COLOUR_IDS and w1 in _SHAPE_IDS:
                ids += ([and_] if ids else []) + [a, w0, w1]
        if len(ids) > length:
            raise ValueError(f"caption {text.decode(tokens[b])[0]!r} names more objects than {length} tokens hold")
        out[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out.to(tokens.device)


def grid_position_embedding(height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sinusoidal positions ``(H·W, dim)``: half the channels encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4, got {dim}")
    ys = timestep_embedding(torch.arange(height).float() * (64 / height), dim // 2, max_period=256.0)
    xs = timestep_embedding(torch.arange(width).float() * (64 / width), dim // 2, max_period=256.0)
    return torch.cat([ys[:, None].expand(height, width, -1), xs[None].expand(height, width, -1)], -1).reshape(
        height * width, dim
    )


class MotionModule(nn.Module):
    """AnimateDiff's motion module at one level: ``h (B·T, C, H, W) → h + W_out·(...)``, identity at init.

    Inside (pre-norm residual sublayers, ``p_t`` the sinusoidal frame position, ``p_xy`` the 2-D position):
    temporal self-attention over the T frames at each location (queries/keys ``x + p_t``) → caption
    cross-attention over all T·H·W tokens of a clip (queries ``x + p_t + p_xy``) → temporal self-attention →
    [spatio-temporal self-attention over all T·H·W tokens of a clip (queries/keys ``x + p_t + p_xy``), where
    configured] → feed-forward. ``post_spatial`` (empty) runs on the tokens before the module, for box layers at levels
    without spatial attention."""

    def __init__(
        self,
        dim: int,
        context_dim: int,
        size: int,
        heads: int = 4,
        max_frames: int = 24,
        caption_cross_attention: bool = True,
        spatiotemporal: bool = False,
        stream_positions: bool = False,
    ):
        super().__init__()
        self.size = size
        self.stream_positions = stream_positions
        self.post_spatial = nn.ModuleList()
        self.norm_in = norm(dim)
        self.proj_in = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=heads)
        self.cross = Attention(dim, context_dim, heads=heads) if caption_cross_attention else None
        self.norm_cross = nn.LayerNorm(dim) if caption_cross_attention else None
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads=heads)
        self.attn_st = Attention(dim, heads=heads) if spatiotemporal else None
        self.norm_st = nn.LayerNorm(dim) if spatiotemporal else None
        if self.attn_st is not None:  # zero: a stage may add it to an already trained module and start unchanged
            nn.init.zeros_(self.attn_st.to_out.weight)
            nn.init.zeros_(self.attn_st.to_out.bias)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)
        self.proj_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        self.register_buffer("frame_pos", timestep_embedding(torch.arange(max_frames), dim), persistent=False)
        self.register_buffer("grid_pos", grid_position_embedding(size, size, dim), persistent=False)

    def forward(
        self, h: torch.Tensor, frames: int, motion_context: torch.Tensor | None, extra: dict | None = None
    ) -> torch.Tensor:
        bt, c, hh, ww = h.shape
        b = bt // frames
        if self.post_spatial:
            tok = h.flatten(2).transpose(1, 2)
            for layer in self.post_spatial:
                tok = layer(tok, frames=frames, extra=extra or {})
            h = tok.transpose(1, 2).reshape(bt, c, hh, ww)
        x = self.proj_in(self.norm_in(h).flatten(2).transpose(1, 2))  # (B·T, HW, C)
        x = x.view(b, frames, hh * ww, c).transpose(1, 2)  # (B, HW, T, C)
        pt = self.frame_pos[:frames]
        if self.stream_positions:  # AnimateDiff's pos_encoder: positions in the tokens, so values and FF see them
            x = x + pt[None, None] + self.grid_pos[None, :, None]
        x = x.reshape(b * hh * ww, frames, c)  # (B·HW, T, C)
        x = x + self.attn1(self.norm1(x) + pt, role="temporal", frames=frames)
        if self.cross is not None and motion_context is not None:
            y = x.view(b, hh * ww, frames, c)
            q = self.norm_cross(y) + pt[None, None] + self.grid_pos[None, :, None]
            if motion_context.shape[0] == b * frames:  # one caption reading per frame: each frame reads its own
                q = q.transpose(1, 2).reshape(b * frames, hh * ww, c)
                out = self.cross(q, motion_context, role="motion_cross").view(b, frames, hh * ww, c).transpose(1, 2)
            else:
                out = self.cross(q.reshape(b, hh * ww * frames, c), motion_context, role="motion_cross").view_as(y)
            x = (y + out).reshape(b * hh * ww, frames, c)
        x = x + self.attn2(self.norm2(x) + pt, role="temporal", frames=frames)
        if self.attn_st is not None:  # every (frame, location) token of a clip attends to every other one
            y = x.view(b, hh * ww, frames, c)
            q = (self.norm_st(y) + pt[None, None] + self.grid_pos[None, :, None]).reshape(b, hh * ww * frames, c)
            x = (y + self.attn_st(q, role="spatiotemporal", frames=frames).view_as(y)).view(b * hh * ww, frames, c)
        x = x + self.ff(self.norm_ff(x))
        x = self.proj_out(x).view(b, hh * ww, frames, c).transpose(1, 2).reshape(bt, hh * ww, c)
        return h + x.transpose(1, 2).reshape(bt, c, hh, ww)


class CleanClipHead(nn.Module):
    """The ``"attention"`` clean-clip head: ``Δ(h, caption, t)`` for the last decoder features ``h (B·T, C, S, S)``.

    Tokens are 2×2 patches of ``h`` (``(S/2)²`` a frame, ≤ 512 a clip of 8 frames) with the frame position, the 2-D
    position and the noise level added *to the tokens*; then a caption cross-attention, one self-attention over all
    T·(S/2)² tokens of the clip and a feed-forward; each token emits its ``patch × patch`` pixels (zero-initialised).
    A direction word asks for a product of *when* and *where* ("at the left early and at the right late"): with the
    positions in the stream, the feed-forward after the caption read can form it (see "Positions in the tokens")."""

    def __init__(
        self,
        in_channels: int,
        context_dim: int,
        size: int,
        out_channels: int,
        image_size: int,
        dim: int = 64,
        heads: int = 4,
    ):
        super().__init__()
        if size % 2 or image_size % (size // 2):
            raise ValueError(f"feature size {size} must be even and divide the image size {image_size} in patches")
        grid = size // 2
        self.patch = image_size // grid
        self.norm_in = norm(in_channels)
        self.proj_in = nn.Conv2d(in_channels, dim, 2, stride=2)
        self.time = nn.Linear(dim, dim)
        self.norm_cross = nn.LayerNorm(dim)
        self.cross = Attention(dim, context_dim, heads=heads)
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads=heads)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)
        self.norm_out = nn.LayerNorm(dim)
        self.proj_out = nn.Linear(dim, out_channels * self.patch * self.patch)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        self.unpatch = nn.PixelShuffle(self.patch)
        self.register_buffer("frame_pos", timestep_embedding(torch.arange(24), dim), persistent=False)
        self.register_buffer("grid_pos", grid_position_embedding(grid, grid, dim), persistent=False)

    def forward(self, h: torch.Tensor, frames: int, context: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        bt = h.shape[0]
        b, dim = bt // frames, self.proj_in.out_channels
        x = self.proj_in(torch.nn.functional.silu(self.norm_in(h)))  # (B·T, D, g, g)
        g = x.shape[-1]
        x = x.flatten(2).transpose(1, 2)  # (B·T, g², D)
        x = x + self.time(timestep_embedding(t, dim).to(x.dtype))[:, None] + self.grid_pos[None]
        x = x.view(b, frames, g * g, dim) + self.frame_pos[:frames, None]
        x = x.reshape(b, frames * g * g, dim)
        x = x + self.cross(self.norm_cross(x), context, role="motion_cross")
        x = x + self.attn(self.norm_attn(x), role="spatiotemporal", frames=frames)
        x = x + self.ff(self.norm_ff(x))
        out = self.proj_out(self.norm_out(x)).view(bt, g, g, -1).permute(0, 3, 1, 2)
        return self.unpatch(out)


@dataclass(frozen=True)
class InflationConfig(JSONConfig):
    """Where motion modules go (stage points of the image model, see :meth:`ImageDenoiser.stage_points`) and
    what else is added. The default puts one module after each down stage, the middle block and the last
    stage of each up level — 16×16, 8×8 and 4×4 — which fits the video model's 2.5 MB share (a module after
    every up stage, as AnimateDiff, would not)."""

    frames: int = 8
    motion_points: tuple[str, ...] = ("down0", "down2", "down4", "mid", "up1", "up4", "up7")
    heads: int = 4
    caption_length: int = 24
    caption_layers: int = 2
    caption_cross_attention: bool = True
    lora_rank: int = 0  # 0: the spatial layers stay exactly the primer's
    first_frame: bool = False  # I2V: zero-initialised features of a clean first frame added to every frame
    spatiotemporal_points: tuple[str, ...] = ()  # motion modules that also attend across locations and frames
    stream_positions: bool = False  # frame and 2-D positions added to the motion modules' tokens (see the module doc)
    frame_captions: bool = False  # the whole caption encoded once per frame, with the frame's position (module doc)
    x0_head: str = ""  # "", "conv" or "attention": a direct clean-clip head blended in by noise level (module doc)


class InflatedVideoDenoiser(nn.Module):
    """``forward(x (B,T,C,H,W), t (B,), tokens (B, caption_length), extra=None, first_frame=None) → ε̂``.

    ``spatial`` is the image model (its weights untouched; frozen unless LoRA is on), ``motion`` the motion
    modules by stage point, ``motion_text`` the whole-caption encoder."""

    def __init__(self, spatial: ImageDenoiser, config: InflationConfig = InflationConfig()):
        super().__init__()
        self.config = config
        self.spatial = spatial
        points = {name: (ch, down) for name, ch, down in spatial.stage_points()}
        unknown = [p for p in config.motion_points if p not in points or p == "stem"]
        unknown += [p for p in config.spatiotemporal_points if p not in config.motion_points]
        if unknown:
            raise ValueError(
                f"motion_points / spatiotemporal_points {unknown} are not stage points of the image model "
                f"{sorted(points)} (spatiotemporal_points must also be motion_points)"
            )
        spatial_config = spatial.config
        self.motion_text = CaptionEncoder(
            spatial_config.text_dim, config.caption_length, config.caption_layers, config.heads
        )
        with torch.no_grad():
            self.motion_text.embed.weight.copy_(spatial.text.embed.weight)
        self.register_buffer(
            "frame_text_pos", timestep_embedding(torch.arange(24), spatial_config.text_dim), persistent=False
        )
        self.motion = nn.ModuleDict(
            {
                p: MotionModule(
                    points[p][0],
                    spatial_config.text_dim,
                    spatial_config.image_size // points[p][1],
                    config.heads,
                    caption_cross_attention=config.caption_cross_attention,
                    spatiotemporal=p in config.spatiotemporal_points,
                    stream_positions=config.stream_positions,
                )
                for p in config.motion_points
            }
        )
        self.first_frame_in = None
        if config.first_frame:
            s = spatial_config.unshuffle
            self.first_frame_in = nn.Conv2d(spatial_config.channels * s * s, spatial_config.widths[0], 3, padding=1)
            nn.init.zeros_(self.first_frame_in.weight)
            nn.init.zeros_(self.first_frame_in.bias)
        self.x0_head = self.x0_gate = None
        if config.x0_head not in ("", "conv", "attention"):
            raise ValueError(f"x0_head must be '', 'conv' or 'attention', got {config.x0_head!r}")
        if config.x0_head:
            from .schedule import make_train_scheduler

            _, last, down = spatial.stage_points()[-1]
            s = spatial_config.unshuffle
            if config.x0_head == "conv":
                self.x0_head = nn.Sequential(
                    norm(last), nn.SiLU(), nn.Conv2d(last, spatial_config.channels * s * s, 3, padding=1)
                )
                nn.init.zeros_(self.x0_head[-1].weight)
                nn.init.zeros_(self.x0_head[-1].bias)
            else:
                if not config.caption_cross_attention:
                    raise ValueError("x0_head='attention' reads the whole caption: it needs caption_cross_attention")
                self.x0_head = CleanClipHead(
                    last,
                    spatial_config.text_dim,
                    spatial_config.image_size // down,
                    spatial_config.channels,
                    spatial_config.image_size,
                    heads=config.heads,
                )
            self.x0_gate = nn.Linear(spatial_config.widths[0], 1)
            nn.init.zeros_(self.x0_gate.weight)  # the model starts as the image model (module doc)
            nn.init.zeros_(self.x0_gate.bias)
            acp = make_train_scheduler().alphas_cumprod.float()
            self.register_buffer("alphas_cumprod", acp, persistent=False)
        self.lora = nn.ModuleDict()
        if config.lora_rank:
            for point, block in spatial.spatial_transformers().items():
                for attn_name in ("self_attn", "cross_attn"):
                    attn = getattr(block, attn_name)
                    for proj in ("to_q", "to_k", "to_v", "to_out"):
                        key = f"{point}_{attn_name}_{proj}"
                        self.lora[key] = LoRA(getattr(attn, proj), config.lora_rank)

    def post_spatial_slots(self) -> dict[str, nn.ModuleList]:
        """One ``post_spatial`` slot per spatial stage: inside the stage's transformer (between self- and
        cross-attention, GLIGEN's place) where it has one, else at the input of its motion module."""
        slots = {p: b.post_spatial for p, b in self.spatial.spatial_transformers().items()}
        for p, m in self.motion.items():
            slots.setdefault(p, m.post_spatial)
        return slots

    def post_spatial_widths(self) -> dict[str, int]:
        """The token width of each :meth:`post_spatial_slots` slot."""
        widths = {name: ch for name, ch, _ in self.spatial.stage_points()}
        return {p: widths[p] for p in self.post_spatial_slots()}

    def delta_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what differs from the image model (the shipped video checkpoint)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("spatial.")}

    def load_delta(self, state: dict[str, torch.Tensor]) -> None:
        own = self.delta_state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"video delta does not match this inflation: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        self.load_state_dict(state, strict=False)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | int,
        tokens: torch.Tensor,
        extra: dict | None = None,
        first_frame: torch.Tensor | None = None,
        residuals: tuple[list[torch.Tensor], torch.Tensor] | None = None,
        stem_head: tuple | None = None,
    ) -> torch.Tensor:
        """``residuals``: per-frame ControlNet residuals ``(B·T, …)`` for the spatial model's skips and middle
        block (see :meth:`ImageDenoiser.forward`), e.g. MagicAnimate's pose ControlNet. ``stem_head``: another input
        stem and output head around the same backbone, e.g. MagicVideo-V2's 64-px V2V stage (the clip may then have
        any size and channel count the stem accepts)."""
        spatial_config, config = self.spatial.config, self.config
        if stem_head is not None:
            if x.dim() != 5:
                raise ValueError(f"x must be (B, T, C, H, W), got {tuple(x.shape)}")
        elif (
            x.dim() != 5
            or x.shape[2] != spatial_config.channels
            or x.shape[-2:] != (spatial_config.image_size, spatial_config.image_size)
        ):
            raise ValueError(
                f"x must be (B, T, {spatial_config.channels}, {spatial_config.image_size}, "
                f"{spatial_config.image_size}), got {tuple(x.shape)}"
            )
        if tokens.dim() != 2 or tokens.shape != (x.shape[0], config.caption_length) or tokens.is_floating_point():
            raise ValueError(
                f"tokens must be ({x.shape[0]}, {config.caption_length}) token ids, got {tuple(tokens.shape)}"
            )
        b, frames = x.shape[:2]
        if frames > 24:
            raise ValueError(f"at most 24 frames are supported (the motion modules' position table), got {frames}")
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(b)
        spatial_ctx = self.spatial.text(object_tokens(tokens, spatial_config.caption_length)).repeat_interleave(
            frames, 0
        )
        motion_ctx = None
        if config.caption_cross_attention and config.frame_captions:  # (B·T, L, D): caption k is read at frame k
            offset = self.frame_text_pos[:frames].repeat(b, 1)[:, None]
            motion_ctx = self.motion_text(tokens.repeat_interleave(frames, 0), offset)
        elif config.caption_cross_attention:
            motion_ctx = self.motion_text(tokens)
        ff = None
        if first_frame is not None:
            if self.first_frame_in is None:
                raise ValueError("first_frame given, but this model was built with first_frame=False")
            if first_frame.shape != (b, *x.shape[2:]):
                raise ValueError(f"first_frame must be {(b, *x.shape[2:])}, got {tuple(first_frame.shape)}")
            ff = self.first_frame_in(self.spatial.stem(first_frame)).repeat_interleave(frames, 0)

        last_point = self.spatial.stage_points()[-1][0]
        features: dict[str, torch.Tensor] = {}

        def after_stage(name: str, h: torch.Tensor) -> torch.Tensor:
            if name == "stem" and ff is not None:
                h = h + ff
            elif name in self.motion:
                h = self.motion[name](h, frames, motion_ctx, extra)
            if name == last_point:
                features["last"] = h
            return h

        eps = self.spatial(
            x.flatten(0, 1),
            t.repeat_interleave(frames),
            spatial_ctx,
            after_stage=after_stage,
            frames=frames,
            extra=extra,
            residuals=residuals,
            stem_head=stem_head,
        )
        if self.x0_head is not None and stem_head is None:
            tt = t.repeat_interleave(frames)
            if self.config.x0_head == "conv":
                direct = self.spatial.unstem(self.x0_head(features["last"]))
            else:
                ctx = motion_ctx if motion_ctx.shape[0] == b else motion_ctx[::frames]
                direct = self.x0_head(features["last"], frames, ctx, tt)
            eps = self._blend_x0(x.flatten(0, 1), tt, eps, direct)
        return eps.view(b, frames, *eps.shape[1:])

    def _blend_x0(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """ε̂ of the blended clean estimate x̂₀ = ᾱ·x̂₀^ε + (1 − ᾱ)·(g(t)·clip(x̂₀^ε) + Δ(h)) (module doc), in float32:
        at high noise ε̂ carries x̂₀ at a relative level √ᾱ (5·10⁻⁵ at t = 999), which bf16 would round away."""
        a = self.alphas_cumprod[t.long()].view(-1, 1, 1, 1)
        sa, s1 = a.sqrt(), (1 - a).sqrt()
        x, eps = x.float(), eps.float()
        x0_eps = (x - s1 * eps) / sa
        gate = 1 + torch.tanh(self.x0_gate(timestep_embedding(t, self.x0_gate.in_features).to(delta.dtype))).float()
        direct = gate.view(-1, 1, 1, 1) * x0_eps.clamp(-1, 1) + delta.float()
        x0 = sa * (x - s1 * eps) + (1 - a) * direct  # ᾱ·x̂₀^ε written without dividing by √ᾱ
        return (x - sa * x0) / s1
