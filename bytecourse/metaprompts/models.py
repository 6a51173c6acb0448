"""Meta Prompts (Wan et al., arXiv 2312.14733) on the course's diffusion UNet — the mechanism as the paper's code
builds it (``meta_prompts/models.py``, ``depth/models_depth/model.py``, ``segmentation/models/model.py``; brief §3.2).

The perception model reads a **clean** image (no noise is added, the text encoder is dropped) with a diffusion UNet
whose cross-attention context is a learnt matrix instead of a caption:

.. code-block:: text

    z₁ = x                                        # the image itself (the paper: its clean VAE latent)
    for i = 1 … L:                                # recurrent refinement (paper §3.3; refine_step = 3)
        P_i = prompts(i)                          # meta prompts, (N, d): one shared matrix, or own + MLP adapter
        F_i, ε_i = UNet(z_i, temb = τ_i, context = P_i)   # τ_i: a learnt vector replacing the time embedding
        z_{i+1} = ε_i = OutProj(F_i[final])       # the UNet's own output layer maps the last features back
    heads(F_L, P_L)                               # only the last loop is supervised; gradients reach every loop

**Features** (toy mapping of SD's ``output_blocks[1]``, ``[4]``, ``[7]`` and the final block, 1/64 … 1/8 of the
image): the primer's UNet has three levels of two up-stages, so we take the end of the coarse level (``up1``,
80 ch @ 4×4), the end of the middle level (``up4``, 80 @ 8×8), and both stages of the finest level (``up6``,
``up7``, 64 @ 16×16; ``up7`` is what the output layer reads).

**Re-arrangement** (paper §3.2, Eq. for F′): each feature map is projected to the prompt dimension d, then
F′[n, h, w] = Σ_c F[c, h, w] · P[n, c] — a per-pixel dot product with every prompt, so the channels become the N
prompts and a prompt that "asks for" a class lights up where that class is (:func:`rearrange`).

**Heads.** Segmentation: per scale conv → GroupNorm → ReLU → re-arrange, then a small UperNet
(pyramid pooling on the coarsest map, FPN top-down, fused at the finest scale) and an FCN auxiliary head on scale 2
(loss weight 0.4); cross-entropy + 0.5 × Dice (the paper uses Lovász; Dice plays the same role of a region loss
for the small classes, and was not ablated). Depth: deconvolutions bring the three finest scales to one resolution →
concat → conv → GN → ReLU → re-arrange → a stride-2 deconvolution (32 filters, kernel 2) → conv → sigmoid × max
depth; SiLog loss with λ = 0.5 (:func:`silog_loss`). The paper trains one model per task; this toy trains both
heads on one backbone (``tasks``), which halves the arms to train — ``tasks=("segmentation",)`` is the paper's
single-task setting.

**Prompt variants** (the brief's toy plan): ``"meta"`` (learnt), ``"null"`` (the caption encoder's null caption,
fixed) and ``"classnames"`` (the caption encoder's reading of the class names, fixed — VPD's text prompts).
Re-arrangement needs learnt prompts. ``per_loop_prompts=True`` is the depth code's form (own prompts and a
d-d-d GELU adapter per loop); the default ``False`` is the segmentation code's single shared matrix, the smaller of
the two (the per-loop form is tested, not ablated).

**Tuning.** The UNet is tuned more gently than the new parts, as in the paper (its UNet runs at 0.1× the head
learning rate): through a LoRA delta (``tune="lora"``, on every conv and linear layer) plus its norm layers and the
small output layer, so an arm ships as a small delta on the shared perception-pretrained UNet; ``"full"`` tunes every
weight (the randomly initialised control, where a delta on random weights would mean nothing); ``"frozen"`` none.

:class:`ConvBackbone` is the plain convolutional control (no attention, no time, no text), sized to the same
parameter count; it feeds the same heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import text
from ..configs import JSONConfig
from ..diffusion.layers import timestep_embedding
from ..diffusion.lora import add_lora
from ..diffusion.unet import ImageDenoiser
from ..validation import check_choice, check_int
from ..worlds.render import NUM_COLOURS, NUM_SHAPES

TASKS = ("segmentation", "depth")
PROMPT_KINDS = ("meta", "null", "classnames")
LABEL_SETS = {"shape": 1 + NUM_SHAPES, "colour_shape": 1 + NUM_COLOURS * NUM_SHAPES}
FEATURE_POINTS = ("up1", "up4", "up6", "up7")  # coarse → fine; see the module doc
CLASSNAME_PROMPT = "a circle and a square and a triangle"


@dataclass(frozen=True)
class MetaPromptsConfig(JSONConfig):
    prompts: str = "meta"  # "meta" | "null" | "classnames"
    n_prompts: int = 16
    per_loop_prompts: bool = False
    rearrange: bool = True
    loops: int = 3
    tasks: tuple[str, ...] = TASKS
    labels: str = "shape"  # "shape": background + 3 kinds; "colour_shape": background + 18 colour × kind
    head_dim: int = 32  # the UperNet's channels
    max_depth: float = 1.0
    backbone: str = "unet"  # "unet" | "conv"
    tune: str = "lora"  # "lora" | "full" | "frozen"
    init: str = "pretrained"  # "pretrained" | "random": the UNet's weights before tuning
    lora_rank: int = 8  # rank 4 collapsed on a training seed (see train.py); rank 8's delta still fits the share
    conv_width: float = 1.0  # ConvBackbone's width multiplier (chosen to match the UNet's parameters)

    def validate(self) -> None:
        check_choice("prompts", self.prompts, PROMPT_KINDS)
        check_choice("labels", self.labels, tuple(LABEL_SETS))
        check_choice("backbone", self.backbone, ("unet", "conv"))
        check_choice("tune", self.tune, ("lora", "full", "frozen"))
        check_choice("init", self.init, ("pretrained", "random"))
        if self.init == "random" and self.tune != "full":
            raise ValueError("a randomly initialised UNet must be tuned in full (tune='full')")
        check_int("n_prompts", self.n_prompts, 1)
        check_int("head_dim", self.head_dim, 8)
        if isinstance(self.loops, bool) or not isinstance(self.loops, int) or self.loops < 1:
            raise ValueError(f"loops must be a whole number >= 1, got {self.loops!r}")
        if not self.tasks or any(t not in TASKS for t in self.tasks) or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks!r}")
        if self.rearrange and self.prompts != "meta":
            raise ValueError("re-arrangement needs learnt prompts: set prompts='meta' or rearrange=False")
        if self.backbone == "conv" and (self.rearrange or self.loops != 1):
            raise ValueError("the plain conv backbone has no prompts and no loops: use rearrange=False, loops=1")

    @property
    def num_classes(self) -> int:
        return LABEL_SETS[self.labels]


def rearrange(features: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """F′[b, n, h, w] = Σ_c F[b, c, h, w] · P[n, c] (Meta Prompts §3.2): every pixel's feature dotted with every
    prompt, so the channels become prompts. ``prompts`` is (N, C) or per sample (B, N, C)."""
    if features.dim() != 4 or prompts.shape[-1] != features.shape[1]:
        raise ValueError(
            f"features (B, C, H, W) and prompts (…, N, C) must share C; got {features.shape}, {prompts.shape}"
        )
    if prompts.dim() == 2:
        return torch.einsum("bchw,nc->bnhw", features, prompts)
    return torch.einsum("bchw,bnc->bnhw", features, prompts)


def silog_loss(pred: torch.Tensor, target: torch.Tensor, lam: float = 0.5, eps: float = 1e-6) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al. 2014; the paper's depth loss, λ = 0.5, as in its GLPDepth criterion):
    √( mean(g²) − λ·mean(g)² ), g = log d̂ − log d over the valid (d > 0) pixels."""
    valid = target > 0
    g = torch.log(pred[valid].clamp(min=eps)) - torch.log(target[valid])
    return torch.sqrt((g.pow(2).mean() - lam * g.mean().pow(2)).clamp(min=eps))


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − mean over classes of the soft Dice overlap (a region loss beside cross-entropy, for small classes)."""
    prob = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    inter = (prob * onehot).sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)).mean()


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class MetaPrompts(nn.Module):
    """The learnable prompts: one shared (N, d) matrix, or (``per_loop``) one per loop, each through its own
    d-d-d GELU adapter (the depth code's ``TextAdapterDepth``)."""

    def __init__(self, n: int, dim: int, loops: int, per_loop: bool = False):
        super().__init__()
        self.per_loop = per_loop
        self.prompts = nn.Parameter(torch.randn(loops if per_loop else 1, n, dim) * dim**-0.5)
        self.adapters = (
            nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)) for _ in range(loops))
            if per_loop
            else None
        )

    def forward(self, loop: int) -> torch.Tensor:
        if self.adapters is None:
            return self.prompts[0]
        p = self.prompts[loop]
        return p + self.adapters[loop](p)


class UNetBackbone(nn.Module):
    """The diffusion UNet as a recurrent feature extractor (see the module doc): ``forward(x) → features`` of the
    last loop, by :data:`FEATURE_POINTS`; ``context(loop)`` is the cross-attention context of that loop."""

    def __init__(self, unet: ImageDenoiser, config: MetaPromptsConfig):
        super().__init__()
        self.config = config
        self.unet = unet
        dim = unet.config.text_dim
        if config.prompts == "meta":
            self.prompts = MetaPrompts(config.n_prompts, dim, config.loops, config.per_loop_prompts)
        else:
            self.prompts = None
            caption = "" if config.prompts == "null" else CLASSNAME_PROMPT
            with torch.no_grad():
                fixed = unet.text(text.encode([caption], unet.config.caption_length))
            self.register_buffer("fixed_context", fixed[0].clone())
        with torch.no_grad():  # τ_i starts as the model's own embedding of t = 0 (a clean image)
            t0 = unet.time_mlp(timestep_embedding(torch.zeros(1), unet.config.widths[0]))
        self.time = nn.Parameter(t0.repeat(config.loops, 1))
        unet.text = None  # the text encoder is dropped, as in the paper
        self.deltas = nn.ModuleDict()
        if config.tune == "lora":
            self.deltas = add_lora(unet, config.lora_rank, skip=("time_mlp", "out"))
        self.prompt_dim = dim
        self.channels = {name: ch for name, ch, _ in unet.stage_points() if name in FEATURE_POINTS}
        self.strides = {name: s for name, _, s in unet.stage_points() if name in FEATURE_POINTS}

    def context(self, loop: int) -> torch.Tensor:
        return self.prompts(loop) if self.prompts is not None else self.fixed_context

    def forward(self, x: torch.Tensor, loops: int | None = None) -> dict[str, torch.Tensor]:
        loops = self.config.loops if loops is None else loops
        if not 1 <= loops <= self.config.loops:
            raise ValueError(f"loops must be in 1..{self.config.loops}, got {loops}")
        feats: dict[str, torch.Tensor] = {}

        def keep(name: str, h: torch.Tensor) -> torch.Tensor:
            if name in FEATURE_POINTS:
                feats[name] = h
            return h

        z = x
        for i in range(loops):
            feats.clear()
            z = self.unet(
                z, None, None, after_stage=keep, context=self.context(i)[None], time_embedding=self.time[i : i + 1]
            )
        return dict(feats)

    def head_prompts(self) -> torch.Tensor | None:
        """The prompts the heads re-arrange with: the last loop's."""
        return self.prompts(self.config.loops - 1) if self.prompts is not None else None


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            _gn(cin),
            nn.SiLU(),
            nn.Conv2d(cin, cout, 3, padding=1),
            _gn(cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class ConvBackbone(nn.Module):
    """A plain convolutional encoder–decoder with the UNet's layout (pixel-unshuffle stem, three levels, skips) but no
    attention, time or text; its features come from the same places (:data:`FEATURE_POINTS`)."""

    def __init__(self, width: float = 1.0, base: tuple[int, ...] = (64, 80, 80)):
        super().__init__()
        w = [max(8, int(round(c * width / 8)) * 8) for c in base]
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, w[0], 3, padding=1))
        self.d0, self.down0 = _ConvBlock(w[0], w[0]), nn.Conv2d(w[0], w[0], 3, 2, 1)
        self.d1, self.down1 = _ConvBlock(w[0], w[1]), nn.Conv2d(w[1], w[1], 3, 2, 1)
        self.d2 = _ConvBlock(w[1], w[2])
        self.mid = nn.Sequential(_ConvBlock(w[2], w[2]), _ConvBlock(w[2], w[2]))
        self.u0, self.u1 = _ConvBlock(2 * w[2], w[2]), _ConvBlock(w[2] + w[1], w[2])
        self.u3, self.u4 = _ConvBlock(w[2] + w[1], w[1]), _ConvBlock(w[1] + w[0], w[1])
        self.u6, self.u7 = _ConvBlock(w[1] + w[0], w[0]), _ConvBlock(2 * w[0], w[0])
        self.prompt_dim = 64  # the width the heads project to (the UNet's text_dim)
        self.channels = {"up1": w[2], "up4": w[1], "up6": w[0], "up7": w[0]}
        self.strides = {"up1": 8, "up4": 4, "up6": 2, "up7": 2}

    def forward(self, x: torch.Tensor, loops: int | None = None) -> dict[str, torch.Tensor]:
        def up(h: torch.Tensor) -> torch.Tensor:
            return F.interpolate(h, scale_factor=2, mode="nearest")

        s = self.stem(x)  # the UNet's skips: stem, down0, its stride-2 conv, down2, its stride-2 conv, down4
        a = self.d0(s)
        a2 = self.down0(a)
        b = self.d1(a2)
        b2 = self.down1(b)
        c = self.d2(b2)
        h = self.u0(torch.cat([self.mid(c), c], 1))
        f1 = self.u1(torch.cat([h, b2], 1))
        h = self.u3(torch.cat([up(f1), b], 1))
        f4 = self.u4(torch.cat([h, a2], 1))
        f6 = self.u6(torch.cat([up(f4), a], 1))
        f7 = self.u7(torch.cat([f6, s], 1))
        return {"up1": f1, "up4": f4, "up6": f6, "up7": f7}

    def head_prompts(self) -> None:
        return None


class SegmentationHead(nn.Module):
    """Per scale: conv(→ d) → GN → ReLU → [re-arrange → N]; then a small UperNet (pyramid pooling on the coarsest map,
    lateral 1×1 + top-down FPN, 3×3 per level, all upsampled to the finest and fused) and an FCN auxiliary
    classifier on scale index 2 (the paper's weight 0.4). The paper upsamples every scale 2× first, so that its
    finest map (1/8) reaches 1/4; ours is at 1/2 already, so the head runs there and its logits are upsampled 2×,
    as UperNet's are — a quarter of the cost."""

    def __init__(self, channels: list[int], dim: int, n_prompts: int | None, classes: int, hidden: int = 64):
        super().__init__()
        self.project = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 3, padding=1), _gn(dim), nn.ReLU()) for c in channels
        )
        c_in = n_prompts or dim
        self.ppm = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), nn.Conv2d(c_in, hidden, 1), nn.ReLU()) for s in (1, 2)
        )
        self.ppm_fuse = nn.Sequential(nn.Conv2d(c_in + 2 * hidden, hidden, 3, padding=1), _gn(hidden), nn.ReLU())
        self.lateral = nn.ModuleList(nn.Sequential(nn.Conv2d(c_in, hidden, 1), nn.ReLU()) for _ in channels[:-1])
        self.fpn = nn.ModuleList(
            nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), _gn(hidden), nn.ReLU()) for _ in channels[:-1]
        )
        self.fuse = nn.Sequential(nn.Conv2d(hidden * len(channels), hidden, 3, padding=1), _gn(hidden), nn.ReLU())
        self.classify = nn.Conv2d(hidden, classes, 1)
        self.aux = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1), _gn(hidden), nn.ReLU(), nn.Conv2d(hidden, classes, 1)
        )

    out_size: tuple[int, int] | None = None  # set by the model: the image's size (logits are upsampled to it)

    def forward(self, feats: list[torch.Tensor], prompts: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        maps = [p(f) for p, f in zip(self.project, feats)]
        if prompts is not None:
            maps = [rearrange(m, prompts) for m in maps]
        top = maps[0]
        size = top.shape[-2:]
        pooled = [F.interpolate(p(top), size=size, mode="bilinear", align_corners=False) for p in self.ppm]
        levels = [self.ppm_fuse(torch.cat([top, *pooled], 1))]  # coarse → fine
        for lat, fpn, m in zip(self.lateral, self.fpn, maps[1:]):
            h = lat(m) + F.interpolate(levels[-1], size=m.shape[-2:], mode="bilinear", align_corners=False)
            levels.append(fpn(h))
        fine = levels[-1].shape[-2:]
        fused = self.fuse(
            torch.cat([F.interpolate(lv, size=fine, mode="bilinear", align_corners=False) for lv in levels], 1)
        )
        aux = F.interpolate(self.aux(maps[2]), size=fine, mode="bilinear", align_corners=False)
        full = self.out_size or fine
        return (
            F.interpolate(self.classify(fused), size=full, mode="bilinear", align_corners=False),
            F.interpolate(aux, size=full, mode="bilinear", align_corners=False),
        )


class DepthHead(nn.Module):
    """Scales 2–4 brought to the finest by deconvolutions → concat → conv(→ d) → GN → ReLU → [re-arrange → N] →
    a stride-2 deconvolution (32 filters, kernel 2) → conv → sigmoid × max depth. The paper's features stop at 1/8
    and need three such deconvolutions; ours stop at 1/2 and need one."""

    def __init__(self, channels: list[int], strides: list[int], dim: int, n_prompts: int | None, max_depth: float):
        super().__init__()
        fine = min(strides)
        self.lift = nn.ModuleList(
            nn.Identity()
            if s == fine
            else nn.Sequential(nn.ConvTranspose2d(c, c, s // fine, stride=s // fine), _gn(c), nn.ReLU())
            for c, s in zip(channels, strides)
        )
        self.squeeze = nn.Sequential(nn.Conv2d(sum(channels), dim, 3, padding=1), _gn(dim), nn.ReLU())
        c_in = n_prompts or dim
        layers: list[nn.Module] = []
        for _ in range((fine - 1).bit_length()):  # log2(fine) stride-2 deconvolutions back to the image's size
            layers += [nn.ConvTranspose2d(c_in, 32, 2, stride=2), _gn(32), nn.ReLU()]
            c_in = 32
        self.up = nn.Sequential(*layers, nn.Conv2d(c_in, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 3, padding=1))
        self.max_depth = max_depth

    def forward(self, feats: list[torch.Tensor], prompts: torch.Tensor | None) -> torch.Tensor:
        h = self.squeeze(torch.cat([lift(f) for lift, f in zip(self.lift, feats)], 1))
        if prompts is not None:
            h = rearrange(h, prompts)
        return torch.sigmoid(self.up(h))[:, 0] * self.max_depth


class MetaPromptsModel(nn.Module):
    """``forward(images (B,3,H,W) in [0,1], loops=None) → {"logits", "aux", "depth"}`` (the tasks it has).

    ``backbone`` is a :class:`UNetBackbone` (the paper) or a :class:`ConvBackbone` (the control)."""

    def __init__(self, backbone: UNetBackbone | ConvBackbone, config: MetaPromptsConfig, image_size: int = 32):
        super().__init__()
        config.validate()
        self.config = config
        self.image_size = image_size
        self.backbone = backbone
        dim = backbone.prompt_dim
        n = config.n_prompts if config.rearrange else None
        ch = [backbone.channels[p] for p in FEATURE_POINTS]
        st = [backbone.strides[p] for p in FEATURE_POINTS]
        self.segmentation = (
            SegmentationHead(ch, dim, n, config.num_classes, config.head_dim)
            if "segmentation" in config.tasks
            else None
        )
        self.depth = DepthHead(ch[1:], st[1:], dim, n, config.max_depth) if "depth" in config.tasks else None
        if self.segmentation is not None:
            self.segmentation.out_size = (image_size, image_size)

    def forward(self, images: torch.Tensor, loops: int | None = None) -> dict[str, torch.Tensor]:
        if images.dim() != 4 or images.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"images must be (B, 3, {self.image_size}, {self.image_size}), got {tuple(images.shape)}")
        if images.is_floating_point() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
            raise ValueError("images must be in [0, 1] (the world's image space)")
        if loops is not None and (isinstance(loops, bool) or not isinstance(loops, int) or loops < 1):
            raise ValueError(f"loops must be a whole number >= 1, got {loops!r}")
        feats = self.backbone(images * 2 - 1, loops)
        f = [feats[p] for p in FEATURE_POINTS]
        prompts = self.backbone.head_prompts() if self.config.rearrange else None
        out: dict[str, torch.Tensor] = {}
        if self.segmentation is not None:
            out["logits"], out["aux"] = self.segmentation(f, prompts)
        if self.depth is not None:
            out["depth"] = self.depth(f[1:], prompts)
        return out

    def loss(self, images: torch.Tensor, labels: torch.Tensor, depth: torch.Tensor, dice: float = 0.5) -> torch.Tensor:
        """The supervised loss of the last loop: CE (+ 0.4·auxiliary CE + ``dice``·Dice) + SiLog(λ = 0.5)."""
        out = self(images)
        total = images.new_zeros(())
        if "logits" in out:
            total = total + F.cross_entropy(out["logits"], labels) + 0.4 * F.cross_entropy(out["aux"], labels)
            if dice:
                total = total + dice * dice_loss(out["logits"], labels)
        if "depth" in out:
            total = total + silog_loss(out["depth"], depth)
        return total

    # ---- what is trained, at which rate, and what ships ----
    def parameter_groups(self, unet_lr_scale: float) -> list[dict]:
        """AdamW groups: the new parts (prompts, time vectors, heads; the whole conv control) at the full rate; the
        UNet's LoRA delta, norms and output layer (or, with ``tune="full"``, all of it) at ``unet_lr_scale``×."""
        self.requires_grad_(False)
        new, unet = [], []
        for name, p in self.named_parameters():
            if name.startswith("backbone.unet."):
                sub = name[len("backbone.unet.") :]
                if self.config.tune == "full" or (self.config.tune == "lora" and _light(sub)):
                    unet.append(p)
            else:
                (unet if name.startswith("backbone.deltas.") else new).append(p)
        for p in new + unet:
            p.requires_grad_(True)
        groups = [{"params": new, "lr_scale": 1.0}]
        if unet:
            groups.append({"params": unet, "lr_scale": unet_lr_scale})
        return groups

    def shipped_state(self) -> dict[str, torch.Tensor]:
        """What an arm ships: everything but the parent UNet's untouched weights (with ``tune="lora"``)."""
        out = {}
        for name, v in self.state_dict().items():
            if (
                name.startswith("backbone.unet.")
                and self.config.tune == "lora"
                and not _light(name[len("backbone.unet.") :])
            ):
                continue
            if name.startswith("backbone.unet.") and self.config.tune == "frozen":
                continue
            out[name] = v
        return out


def _light(name: str) -> bool:
    """The UNet weights a LoRA arm tunes in full: norm layers and the output layer (``out.*``)."""
    return name.startswith("out.") or ".norm" in name or name.startswith("norm") or "_norm" in name


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable": trainable}


def count_flops(model: MetaPromptsModel, image_size: int = 32) -> int:
    """Forward FLOPs for one image (``torch.utils.flop_counter.FlopCounterMode``)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, image_size, image_size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter:  # (under no_grad its module tracker trips on parameters)
        model(x)
    return int(counter.get_total_flops())
