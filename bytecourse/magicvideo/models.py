"""MagicVideo-V2's modules at toy scale (Wang et al. 2024, arXiv 2401.04468, §2 "MagicVideo-V2").

The report's cascade is T2I → I2V → V2V → VFI. Its text-to-image stage is any T2I model (here the primer's), and
its I2V stage is an SD-style UNet inflated with AnimateDiff motion modules (here the course's shared
:class:`~bytecourse.diffusion.inflate.InflatedVideoDenoiser`, kept frozen), to which the report adds:

- a **reference image embedding module** (§2, I2V): "an appearance encoder to extract the reference image embeddings
  and inject them into the I2V module through a cross-attention mechanism", which "decouples the image prompt from
  the text prompt". :class:`ReferenceEncoder` turns the reference frame into a 4×4 grid of tokens; every spatial
  cross-attention of the UNet gets a second set of key/value projections for them, and the two attentions are
  summed before the output projection (the decoupled cross-attention of IP-Adapter, Ye et al. 2023, Eq. 5):

      Z = Attn(Q, K_text, V_text) + Attn(Q, K′_ref, V′_ref),   K′ = y W′_K,  V′ = y W′_V,  W′_V = 0 at first,

  so the model starts as exactly the video model (:class:`DecoupledCrossAttention`);
- a **latent noise prior** (§2, I2V): the initial noise of every frame is "shifted toward the reference image
  latent", which the report says keeps the layout and helps temporal coherence; it gives no formula, so both common
  forms are implemented in :func:`noise_prior` and swept;
- a **ControlNet** (§2, I2V) that "extracts RGB information from the reference image and applies it to all frames":
  :class:`ControlNetLite`, a light convolutional hint network (not an encoder copy — the report does not say which)
  whose zero-initialised 1×1 convolutions add residuals to the UNet's skip features and middle block, the same
  residuals on every frame;
- **image–video joint training**: images are one-frame clips (:mod:`~bytecourse.magicvideo.train`).

The V2V stage (§2, V2V) "has a similar design": it shares the I2V backbone and spatial layers, fine-tunes its motion
module separately and reuses the reference encoder and ControlNet. :class:`V2V` runs the same backbone on a 64-px
clip behind a pixel-unshuffle-by-4 stem (so spatial attention stays at 8×8 and 4×4, and the first features are the
backbone's 16×16), conditioned on the bicubically upsampled 32-px keyframes concatenated to its input (SR3's
conditioning, Saharia et al. 2022), with a low-rank delta on every backbone layer and the motion modules.

The VFI stage is "an in-house GAN-based model" (EDSC head on a VQ-GAN autoencoder). The toy :class:`FrameInterpolator`
is a small convolutional network that predicts the middle frame of two neighbours from per-pixel blend weights plus
a residual — the separable-kernel family's simplest member, on the exact mid frames the world renders.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import JSONConfig
from ..diffusion.attention import Attention, SDPAProcessor
from ..diffusion.inflate import InflatedVideoDenoiser, grid_position_embedding
from ..diffusion.layers import norm, timestep_embedding
from ..diffusion.lora import add_lora
from ..validation import check_float

_SDPA = SDPAProcessor()
NOISE_PRIORS = ("shift", "vp", "matched")


@dataclass(frozen=True)
class MagicVideoConfig(JSONConfig):
    ref_channels: int = 64  # the reference encoder's width
    ref_grid: int = 4  # the reference becomes ref_grid² tokens
    control_channels: int = 48  # ControlNet-lite's width
    v2v_rank: int = 4  # the V2V stage's low-rank delta on the backbone and motion modules
    v2v_fine_channels: int = 16  # the width of V2V's full-resolution refiner
    vfi_channels: int = 48  # the frame interpolator's width


def noise_prior(eps: torch.Tensor, z_ref: torch.Tensor, mode: str = "shift", strength: float = 0.0) -> torch.Tensor:
    """The latent noise prior of MagicVideo-V2's I2V stage: each frame's starting noise moved toward the reference.

    ``eps (B, T, C, H, W)`` standard normal, ``z_ref (B, C, H, W)`` the reference in model space ([−1, 1]; the toy has
    no autoencoder, so its "latent" is the image itself). The report (§2) says only that the mean is shifted toward the
    reference latent; three readings:

    - ``"shift"``: z_T^i = ε^i + λ·z_ref, the mean moved by λ (``strength`` = λ ∈ [0, 1]), sampled from T;
    - ``"vp"``: z_T^i = √γ·z_ref + √(1−γ)·ε^i, variance 1 when z_ref is normalised (``strength`` = γ ∈ [0, 1)),
      sampled from T;
    - ``"matched"``: the same formula, but the sampler starts at the level t* whose ᾱ_t* matches γ
      (:func:`~bytecourse.diffusion.sampling.ddim_start_level`; :func:`~bytecourse.magicvideo.pipeline.image_to_video`
      passes ``strength`` = ᾱ_t*), so z_t*^i is exactly a noised copy of the reference with independent noise per
      frame — SDEdit (Meng et al. 2022) applied to every frame.

    ``strength = 0`` is plain Gaussian noise in every mode.

    Why three. Measured (``eval magicvideo``'s ``noise_prior`` table, I2V from the world's own first frame): the two
    forms sampled from T keep *less* layout than no prior — frame-0 PSNR falls from λ = 0 on, and the oracle's
    direction accuracy falls from 0.56 to ~0.1 at the first non-zero strength. The reason is the schedule: the
    course's cosine schedule ends at ᾱ_T ≈ 2·10⁻⁹ (zero terminal SNR), so at T the denoiser has learnt that x_T
    carries no image; it reads the shift as noise, ε̂ ≈ x_T, and DDIM carries the reference forward in its *noise*
    direction, off the distribution it was trained on. SD's schedule, which the report's model inherits, leaves
    √ᾱ_T ≈ 0.07 of the image in x_T (the flaw Lin et al. 2024 describe), and that leak is what a mean shift exploits.
    Matching the level is the report's mechanism carried over to a zero-terminal-SNR schedule."""
    if mode not in NOISE_PRIORS:
        raise ValueError(f"mode must be one of {NOISE_PRIORS}, got {mode!r}")
    if mode == "shift":
        lam = check_float("λ (noise prior strength)", strength, 0.0, 1.0)
    else:
        lam = check_float("γ (noise prior strength)", strength, 0.0, 1.0)
        if lam >= 1.0:
            raise ValueError(f"γ must be in [0, 1) (γ = 1 leaves no noise at all), got {strength}")
    if eps.dim() != 5 or z_ref.dim() != 4 or z_ref.shape != (eps.shape[0], *eps.shape[2:]):
        raise ValueError(
            f"eps must be (B, T, C, H, W) and z_ref (B, C, H, W) of the same B, C, H, W; got {tuple(eps.shape)} "
            f"and {tuple(z_ref.shape)}"
        )
    z = z_ref[:, None].to(eps.dtype)
    if mode == "shift":
        return eps + lam * z
    return lam**0.5 * z + (1 - lam) ** 0.5 * eps


class ReferenceEncoder(nn.Module):
    """The appearance encoder: a reference frame ``(B, 3, 32, 32)`` in [−1, 1] → ``(B, grid², dim)`` tokens.

    Three stride-2 convolutions to a ``grid × grid`` map, a linear projection to the caption width, fixed 2-D
    positions, a LayerNorm (the tokens then sit at the scale the text tokens have)."""

    def __init__(self, dim: int, channels: int = 64, grid: int = 4):
        super().__init__()
        self.grid = grid
        self.net = nn.Sequential(
            nn.Conv2d(3, channels // 2, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.SiLU(),
        )
        self.proj = nn.Linear(channels, dim)
        self.norm = nn.LayerNorm(dim)
        self.register_buffer("pos", grid_position_embedding(grid, grid, dim), persistent=False)

    def forward(self, ref: torch.Tensor) -> torch.Tensor:
        if ref.dim() != 4 or ref.shape[1] != 3:
            raise ValueError(f"the reference must be (B, 3, H, W), got {tuple(ref.shape)}")
        h = F.adaptive_avg_pool2d(self.net(ref), self.grid)
        return self.norm(self.proj(h.flatten(2).transpose(1, 2)) + self.pos)


class ReferenceKV(nn.Module):
    """The decoupled key/value projections W′_K, W′_V of one cross-attention (``to_v_ref`` zero at first)."""

    def __init__(self, dim: int, context_dim: int):
        super().__init__()
        self.to_k_ref = nn.Linear(context_dim, dim, bias=False)
        self.to_v_ref = nn.Linear(context_dim, dim, bias=False)
        nn.init.zeros_(self.to_v_ref.weight)


class DecoupledCrossAttention:
    """The processor of one spatial cross-attention: text attention plus reference attention, summed before the
    output projection (IP-Adapter's decoupled cross-attention; MagicVideo-V2 §2 "reference image embedding").

    ``extra["reference"] (B, N, dim)`` are the reference tokens of each clip, repeated over its ``frames`` frames;
    without them (CFG's unconditional half, or a model asked not to look) it is the plain text cross-attention.
    The projections live in a :class:`ReferenceKV` that the owning model registers (a processor is a plain
    attribute of its attention, so its parameters must be owned elsewhere)."""

    def __init__(self, kv: ReferenceKV):
        self.kv = kv

    def __call__(self, attn: Attention, x: torch.Tensor, context=None, frames: int = 1, extra=None, **_):
        extra = extra or {}
        ref = extra.get("reference")
        q = attn.split_heads(attn.to_q(x))
        k, v = attn.split_heads(attn.to_k(context)), attn.split_heads(attn.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v)
        if ref is not None:
            if x.shape[0] != ref.shape[0] * frames:
                raise ValueError(f"{x.shape[0]} frames do not split into {ref.shape[0]} clips of {frames} frames")
            y = ref.repeat_interleave(frames, 0).to(x.dtype)
            k, v = attn.split_heads(self.kv.to_k_ref(y)), attn.split_heads(self.kv.to_v_ref(y))
            out = out + F.scaled_dot_product_attention(q, k, v)
        return attn.to_out(attn.merge_heads(out))


class ControlNetLite(nn.Module):
    """The reference ControlNet, light: a convolutional hint network on the reference RGB, modulated by the time
    embedding, with a zero-initialised 1×1 convolution per skip feature of the UNet and one for its middle block.

    ``forward(ref (B, 3, 32, 32), temb (B, temb_dim), frames)`` → ``(down, mid)`` residuals for
    :meth:`~bytecourse.diffusion.unet.ImageDenoiser.forward`, each repeated over the clip's ``frames`` frames (the
    report: "applies it to all frames"). The skip features live at 16×16, 8×8 and 4×4 (``resolutions``)."""

    def __init__(
        self, skip_channels: list[int], skip_sizes: list[int], mid_channels: int, temb_dim: int, ch: int = 48
    ):
        super().__init__()
        self.skip_sizes = list(skip_sizes)
        self.stem = nn.Sequential(
            nn.Conv2d(3, ch // 2, 3, padding=1), nn.SiLU(), nn.Conv2d(ch // 2, ch, 3, stride=2, padding=1), nn.SiLU()
        )  # 32 → 16
        self.levels = nn.ModuleDict()
        self.film = nn.ModuleDict()
        size = 16
        for s in sorted(set(skip_sizes), reverse=True):
            self.levels[str(s)] = nn.Sequential(
                *([nn.Conv2d(ch, ch, 3, stride=2, padding=1)] if s < size else [nn.Conv2d(ch, ch, 3, padding=1)]),
                nn.SiLU(),
            )
            self.film[str(s)] = nn.Linear(temb_dim, 2 * ch)
            size = s
        self.zero_down = nn.ModuleList(nn.Conv2d(ch, c, 1) for c in skip_channels)
        self.zero_mid = nn.Conv2d(ch, mid_channels, 1)
        for conv in [*self.zero_down, self.zero_mid]:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, ref: torch.Tensor, temb: torch.Tensor, frames: int):
        h = self.stem(ref)
        feats = {}
        for s, layer in self.levels.items():
            h = layer(h)
            scale, shift = self.film[s](F.silu(temb)).chunk(2, -1)
            h = h * (1 + scale[..., None, None]) + shift[..., None, None]
            feats[int(s)] = h
        down = [conv(feats[s]).repeat_interleave(frames, 0) for conv, s in zip(self.zero_down, self.skip_sizes)]
        mid = self.zero_mid(feats[min(feats)]).repeat_interleave(frames, 0)
        return down, mid


def _skip_sizes(video: InflatedVideoDenoiser) -> list[int]:
    """The spatial size of each skip feature of the backbone at its native 32 px (16, then halving at downsamplers)."""
    spatial = video.spatial
    size = spatial.config.image_size // spatial.config.unshuffle
    sizes = [size]
    for stage in spatial.down:
        if not isinstance(stage, nn.ModuleList):
            size //= 2
        sizes.append(size)
    return sizes


class I2V(nn.Module):
    """MagicVideo-V2's I2V stage on the frozen course video model.

    ``forward(x (B, T, 3, 32, 32), t, tokens (B, 24), ref (B, 3, 32, 32) or None) → ε̂``. ``ref=None`` runs the
    video model alone (no reference tokens, no ControlNet residuals): the unconditional half of CFG and what the
    zero-initialised modules reduce to at the start. Trainable: :attr:`reference`, :attr:`ref_attention` (the
    decoupled keys/values), :attr:`control`."""

    def __init__(self, video: InflatedVideoDenoiser, config: MagicVideoConfig = MagicVideoConfig()):
        super().__init__()
        self.config = config
        self.video = video
        video.requires_grad_(False)
        spatial = video.spatial
        text_dim = spatial.config.text_dim
        self.reference = ReferenceEncoder(text_dim, config.ref_channels, config.ref_grid)
        self.ref_attention = nn.ModuleDict()
        for point, block in spatial.spatial_transformers().items():
            kv = ReferenceKV(block.cross_attn.to_q.in_features, text_dim)
            self.ref_attention[point] = kv
            block.cross_attn.set_processor(DecoupledCrossAttention(kv))
        temb_dim = spatial.time_mlp[-1].out_features
        self.control = ControlNetLite(
            spatial.skip_channels(),
            _skip_sizes(video),
            spatial.mid[2].conv2.out_channels,
            temb_dim,
            config.control_channels,
        )

    def trainable(self) -> list[nn.Module]:
        return [self.reference, self.ref_attention, self.control]

    def delta_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what this stage adds to the shipped video model."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("video.")}

    def load_delta(self, state: dict[str, torch.Tensor]) -> None:
        own = self.delta_state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"I2V delta does not match: missing {missing[:4]}, unexpected {unexpected[:4]}")
        self.load_state_dict(state, strict=False)

    def conditioning(self, ref: torch.Tensor | None, t: torch.Tensor, frames: int):
        """``(extra, residuals)`` for the backbone: the reference tokens and the ControlNet residuals (None, None
        without a reference)."""
        if ref is None:
            return None, None
        if ref.dim() != 4 or ref.shape[1:] != (3, 32, 32):
            raise ValueError(f"the reference must be (B, 3, 32, 32), got {tuple(ref.shape)}")
        spatial = self.video.spatial
        temb = spatial.time_mlp(timestep_embedding(t, spatial.config.widths[0]).to(ref.dtype))
        return {"reference": self.reference(ref)}, self.control(ref, temb, frames)

    def forward(self, x: torch.Tensor, t, tokens: torch.Tensor, ref: torch.Tensor | None = None, stem_head=None):
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if ref is not None and ref.shape[0] != x.shape[0]:
            raise ValueError(f"one reference per clip: {x.shape[0]} clips, {ref.shape[0]} references")
        extra, residuals = self.conditioning(ref, t, x.shape[1])
        return self.video(x, t, tokens, extra=extra, residuals=residuals, stem_head=stem_head)


class FineRefiner(nn.Module):
    """V2V's full-resolution path: three 3×3 convolutions at 64 px that correct the backbone's clean estimate.

    ``forward(x_t, low, x0_coarse, signal, aug)`` → a correction ``(N, 3, 64, 64)``, all images ``(N, 3, 64, 64)`` in
    model space; ``signal`` = √ᾱ_t and ``aug`` = the conditioning augmentation's σ, each ``(N,)``, enter as constant
    maps (the noise-level map of FFDNet, Zhang et al. 2018): the refiner has to know how far to trust x_t against the
    upsampled clip, and that a clean condition needs no denoising (Imagen/CDM give the augmentation level to the
    super-resolution model for the same reason). Its last convolution starts at zero, so it starts as the identity.

    Why it exists (measured on the first V2V, without it; 4 held-out clips, evaluation seed 0): the backbone runs at
    16×16 behind a pixel-unshuffle by 4, so every 4×4 block of x_t and of the upsampled clip (96 numbers) is squeezed
    into the backbone's 64 channels, and its one-step x̂₀ stayed *below* bicubic even at t = 10, where x_t is the
    answer plus 1 % noise (32.3 against 33.2 dB). A diffusion super-resolver has to be able to copy its input; this
    path gives it the means. What it bought (same clips): sampled V2V 28.5 → 30.6 dB, still below bicubic, and the
    refiner spends itself cancelling a drifting backbone correction rather than copying x_t
    (:mod:`~bytecourse.magicvideo.train` has the numbers and the next suspects)."""

    def __init__(self, ch: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3 * 3 + 2, ch, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(ch, 3, 3, padding=1),
        )
        with torch.no_grad():
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()

    def forward(
        self, x_t: torch.Tensor, low: torch.Tensor, x0: torch.Tensor, signal: torch.Tensor, aug: torch.Tensor
    ) -> torch.Tensor:
        n, _, h, w = x_t.shape
        maps = torch.stack([signal, aug], 1).to(x_t.dtype)[:, :, None, None].expand(n, 2, h, w)
        return self.net(torch.cat([x_t, low, x0, maps], 1))


class V2V(nn.Module):
    """MagicVideo-V2's V2V stage: 32 → 64 px super-resolution and refinement of a clip, on the I2V backbone.

    ``forward(x (B, T, 3, 64, 64), t, tokens, low (B, T, 3, 64, 64), ref (B, 3, 32, 32) or None, aug) → ε̂``, where
    ``low`` is the 32-px clip upsampled bicubically to 64 px and ``aug`` the σ of the Gaussian conditioning
    augmentation it carries (0 at sampling). The stem reads ``[x_t, low]`` (6 channels) through a pixel-unshuffle by 4
    into the backbone's 16×16 features; the head maps them back through a pixel-shuffle by 4; a
    :class:`FineRefiner` at 64 px corrects the result.

    **Parameterisation.** The head predicts a correction r to the upsampled clip, the refiner a second one f:
    x̂₀ = low + r + f, and
    ε̂ = (x_t − √ᾱ_t·x̂₀)/√(1 − ᾱ_t) — the same ε-model the samplers expect, written around the residual that
    super-resolution has to add (the residual form is common in diffusion super-resolution; the report gives no
    detail). With r = 0 at initialisation, V2V's clean estimate is the bicubic upsample at every level, so sampling
    starts as bicubic upsampling and training only has to learn the sharpening. Measured against the first design
    (an ε-head whose stem and head were the primer's at one pixel of every 2×2 block, zero elsewhere): its weighted
    loss started at 8.8 and was still 8.2 after 160 steps, since three pixels in four began at ε̂ = 0 behind two
    zero layers.

    The x_t half of the stem is the primer's ``conv_in`` read at one pixel of every 2×2 block (the 32-px clip
    x_t[..., ::2, ::2]), so the backbone's features start meaningful; the ``low`` half starts at zero (a
    ControlNet-style zero convolution). Trainable: the stem and head, a rank-``v2v_rank`` delta on every backbone and
    motion-module layer (the report fine-tunes V2V's motion module separately), and copies of the I2V stage's
    reference encoder, decoupled keys/values and ControlNet (the report reuses them; ``use_reference=False`` builds
    the ablation without them)."""

    def __init__(self, i2v: I2V, config: MagicVideoConfig = MagicVideoConfig(), use_reference: bool = True):
        super().__init__()
        self.config = config
        self.use_reference = use_reference
        self.i2v = copy.deepcopy(i2v)  # its own backbone: the delta's hooks must not reach the I2V stage's
        self.i2v.requires_grad_(False)
        spatial = self.i2v.video.spatial
        c0, s = spatial.config.widths[0], spatial.config.unshuffle
        if s != 2:
            raise ValueError("V2V's initialisation assumes the backbone's pixel-unshuffle by 2")
        self.stem_conv = nn.Conv2d(2 * 3 * 16, c0, 3, padding=1)
        last = spatial.out[-1]
        self.head = nn.Sequential(norm(last.in_channels), nn.SiLU(), nn.Conv2d(last.in_channels, 3 * 16, 3, padding=1))
        with torch.no_grad():
            self.stem_conv.weight.zero_()
            self.stem_conv.bias.copy_(spatial.conv_in.bias)
            self.head[0].load_state_dict(spatial.out[0].state_dict())
            self.head[2].weight.zero_()  # r = 0: x̂₀ is the upsampled clip
            self.head[2].bias.zero_()
            for c in range(3):
                for dy in range(2):
                    for dx in range(2):
                        lo, hi = c * 4 + dy * 2 + dx, c * 16 + (2 * dy) * 4 + 2 * dx  # unshuffle-2 / -4 channel
                        self.stem_conv.weight[:, hi] = spatial.conv_in.weight[:, lo]
        from ..diffusion.schedule import make_train_scheduler

        self.register_buffer("alphas_cumprod", make_train_scheduler().alphas_cumprod.float(), persistent=False)
        self.fine = FineRefiner(config.v2v_fine_channels)
        self.lora = add_lora(
            self.i2v.video, config.v2v_rank, skip=("spatial.text", "motion_text", "spatial.conv_in", "spatial.out")
        )
        if use_reference:
            for m in self.i2v.trainable():
                m.requires_grad_(True)

    def trainable(self) -> list[nn.Module]:
        return [self.stem_conv, self.head, self.fine, self.lora] + (self.i2v.trainable() if self.use_reference else [])

    def delta_state_dict(self) -> dict[str, torch.Tensor]:
        keep = ("stem_conv.", "head.", "fine.", "lora.") + (
            ("i2v.reference.", "i2v.ref_attention.", "i2v.control.") if self.use_reference else ()
        )
        return {k: v for k, v in self.state_dict().items() if k.startswith(keep)}

    def load_delta(self, state: dict[str, torch.Tensor]) -> None:
        own = self.delta_state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"V2V delta does not match: missing {missing[:4]}, unexpected {unexpected[:4]}")
        self.load_state_dict(state, strict=False)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem_conv(F.pixel_unshuffle(x, 4))

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.head(h), 4)

    def forward(
        self,
        x: torch.Tensor,
        t,
        tokens: torch.Tensor,
        low: torch.Tensor,
        ref: torch.Tensor | None = None,
        return_x0: bool = False,
        aug: torch.Tensor | float = 0.0,
    ):
        """ε̂, or ``(ε̂, x̂₀)`` with ``return_x0`` (the training loss reads x̂₀); ``aug``: the condition's augmentation
        σ, a number or one per clip."""
        if x.dim() != 5 or x.shape[2:] != (3, 64, 64) or low.shape != x.shape:
            raise ValueError(f"x and low must both be (B, T, 3, 64, 64), got {tuple(x.shape)} and {tuple(low.shape)}")
        if not self.use_reference:
            ref = None
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        low = low.to(x.dtype)
        r = self.i2v(torch.cat([x, low], 2), t, tokens, ref, stem_head=(self._stem, self._head))
        x0 = low + r
        b, frames = x.shape[:2]
        acp = self.alphas_cumprod.to(x.device)[t]
        aug = torch.as_tensor(aug, device=x.device, dtype=torch.float32).expand(b)
        f = self.fine(
            x.flatten(0, 1),
            low.flatten(0, 1),
            x0.flatten(0, 1),
            acp.sqrt().repeat_interleave(frames),
            aug.repeat_interleave(frames),
        )
        x0 = x0 + f.view_as(x0)
        acp = acp.view(-1, 1, 1, 1, 1).to(x.dtype)
        eps = (x - acp.sqrt() * x0) / (1 - acp).sqrt()
        return (eps, x0) if return_x0 else eps


class FrameInterpolator(nn.Module):
    """The VFI stage: the middle frame of two neighbours ``a, b (N, 3, 64, 64)`` in [0, 1].

    A small UNet (pixel-unshuffle by 2, three levels down to 8×8 so a 10-px move is inside its reach) predicts
    per-pixel blend weights m ∈ [0, 1] and a residual r:  ŷ = m·a + (1−m)·b + r. At initialisation m = ½ and r = 0,
    i.e. linear blending — the baseline it must beat."""

    def __init__(self, ch: int = 48):
        super().__init__()
        self.inp = nn.Conv2d(2 * 3 * 4, ch, 3, padding=1)
        self.d1 = nn.Sequential(nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))
        self.d2 = nn.Sequential(nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))
        self.u2 = nn.Sequential(nn.Conv2d(2 * ch, ch, 3, padding=1), nn.SiLU())
        self.u1 = nn.Sequential(nn.Conv2d(2 * ch, ch, 3, padding=1), nn.SiLU())
        self.mid = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU()
        )
        self.out = nn.Conv2d(ch, 4 * 4, 3, padding=1)  # per 2×2 block: blend logit + residual RGB
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.dim() != 4 or a.shape != b.shape or a.shape[1] != 3 or a.shape[-1] % 8 or a.shape[-2] % 8:
            raise ValueError(
                f"a and b must be (N, 3, H, W) of one shape, H and W multiples of 8; "
                f"got {tuple(a.shape)}, {tuple(b.shape)}"
            )
        h0 = F.silu(self.inp(F.pixel_unshuffle(torch.cat([a, b], 1) * 2 - 1, 2)))
        h1 = F.silu(self.d1(h0))
        h2 = self.mid(F.silu(self.d2(h1)))
        u = F.interpolate(h2, scale_factor=2.0, mode="nearest")
        u = self.u2(torch.cat([u, h1], 1))
        u = F.interpolate(u, scale_factor=2.0, mode="nearest")
        u = self.u1(torch.cat([u, h0], 1))
        o = F.pixel_shuffle(self.out(u), 2)  # (N, 4, H, W)
        m = torch.sigmoid(o[:, :1])
        return (m * a + (1 - m) * b + o[:, 1:]).clamp(0, 1)


class PatchCritic(nn.Module):
    """The adversarial critic of VFI's optional GAN term (the report's interpolator is GAN-based; pix2pix's
    conditional PatchGAN, Isola et al. 2017 §3.2): reads the two neighbours and a middle frame ``(N, 3, H, W)`` each,
    in [0, 1], and scores every 8×8-pixel patch (receptive field ≈ 22 px, wider than a frame-to-frame move) as real
    (high) or interpolated (low). Trained with the hinge loss (Lim & Ye 2017; Miyato et al. 2018)."""

    def __init__(self, ch: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(9, ch, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1),
            nn.GroupNorm(8, 2 * ch),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * ch, 2 * ch, 4, stride=2, padding=1),
            nn.GroupNorm(8, 2 * ch),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * ch, 1, 3, padding=1),
        )

    def forward(self, a: torch.Tensor, b: torch.Tensor, mid: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([a, b, mid], 1) * 2 - 1)


class AdversarialVFI(nn.Module):
    """A :class:`FrameInterpolator` and its :class:`PatchCritic`, trained together by one optimiser.

    ``losses(a, b, mid)`` → ``(generator_loss, critic_loss)``; their sum is what the optimiser descends, and it moves
    each network only by its own loss: the interpolator's adversarial term reads the critic through *detached*
    copies of its parameters (``torch.func.functional_call``), and the critic reads the interpolated frame detached.

        L_G = |ŷ − y|₁ − w·mean D(a, b, ŷ),    L_D = mean max(0, 1 − D(a, b, y)) + mean max(0, 1 + D(a, b, ŷ))

    (pix2pix's L1 + conditional GAN objective, with the hinge form of the adversarial terms)."""

    def __init__(self, interpolator: FrameInterpolator, weight: float = 0.01, critic_channels: int = 32):
        super().__init__()
        self.interpolator, self.critic, self.weight = interpolator, PatchCritic(critic_channels), float(weight)

    def losses(self, a: torch.Tensor, b: torch.Tensor, mid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self.interpolator(a, b)
        frozen = {k: v.detach() for k, v in self.critic.named_parameters()}
        fooled = torch.func.functional_call(self.critic, frozen, (a, b, pred)).mean()
        g = F.l1_loss(pred, mid) - self.weight * fooled
        d = F.relu(1 - self.critic(a, b, mid)).mean() + F.relu(1 + self.critic(a, b, pred.detach())).mean()
        return g, d


def sharpness_ratio(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Sharpness of ``pred`` against ``truth`` (both ``(N, …, H, W)``: images, or clips pooled over their frames): the
    gradient energy (mean squared finite-difference gradient) of each, their ratio per item. 1 is as sharp as the
    truth. The *squared* gradient is the point: an edge of height h blurred over k pixels keeps its total variation
    (k·h/k) but its energy drops to h²/k, and a ghosted pair of half-height edges (linear blending of a moving
    object) has h²/2 — an L1-trained interpolator that hedges between two positions scores below 1. Noise raises it:
    read it beside PSNR."""

    def energy(x: torch.Tensor) -> torch.Tensor:
        dy, dx = x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]
        return dy.pow(2).flatten(1).mean(1) + dx.pow(2).flatten(1).mean(1)

    return energy(pred.float()) / energy(truth.float()).clamp(min=1e-12)


def interpolate_clip(clip: torch.Tensor, fn) -> torch.Tensor:
    """``clip (B, T, 3, H, W)`` → ``(B, 2T−1, …)``: the keyframes at even indices, ``fn(a, b)`` between each pair."""
    if clip.dim() != 5 or clip.shape[1] < 2:
        raise ValueError(f"clip must be (B, T ≥ 2, C, H, W) to interpolate, got {tuple(clip.shape)}")
    b, t = clip.shape[:2]
    mids = fn(clip[:, :-1].flatten(0, 1), clip[:, 1:].flatten(0, 1)).view(b, t - 1, *clip.shape[2:])
    out = torch.empty(b, 2 * t - 1, *clip.shape[2:], dtype=clip.dtype, device=clip.device)
    out[:, 0::2], out[:, 1::2] = clip, mids
    return out


def linear_blend(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The VFI baseline: ½(a + b)."""
    return (a + b) / 2
