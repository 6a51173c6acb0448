"""Boximator's control module (Boximator §3.1): box tokens and one new self-attention layer per spatial block.

Box token (the paper's appendix, after GLIGEN):

    t_b = MLP(Fourier([b_loc (4), b_id (3, an RGB colour), b_flag (1)]))

Fourier maps every scalar x to sin/cos(x · 100^{k/8}), k = 0..7, so 8 scalars give 128 features; the MLP has
3 hidden layers (the paper: width 512, output the visual width 1024; here smaller). Empty slots hold a
learnable null token t_null.

Box layer, inserted in every spatial attention block between spatial self-attention and caption
cross-attention, **per frame** (v = that frame's visual tokens, h_box = its N = 8 box tokens):

    v ← v + SelfAttn(v)                                  (frozen)
    v ← v + g · TS(SelfAttn(LN([v ; W h_box])))         (new, trainable; g: our zero-initialised gate)
    v ← v + CrossAttn(v, h_text)                         (frozen)

TS (token selection) keeps the outputs at the visual positions. W projects the token width to the block's
width (GLIGEN's ``linear``).

**The gate is our choice**: the paper's layer has none. We need the frozen base to be exactly unchanged at the
first training step, and offer two zero-initialised gates:

- ``gate="tanh"``: GLIGEN's scalar tanh(α), α = 0 (diffusers' ``GatedSelfAttentionDense`` without its gated
  feed-forward, which Boximator does not have);
- ``gate="zero_out"`` (the default): the attention's output projection starts at zero (ControlNet-style), and
  v ← v + TS(SelfAttn(...)).

We measured the tanh gate first. After the full 1,300-step schedule the four gates had only reached
tanh(α) ≈ ±0.05, and boxes changed nothing the oracle could see. While tanh(α) ≈ 0, every other weight of the
layer gets a near-zero gradient, and the scalar α only learns once the layer already says something useful. A
zero output projection has no such deadlock: its own gradient is non-zero from the first step. The shipped
variants use ``zero_out``; the tanh gate stays available and tested.

The module attaches to our :class:`~bytecourse.diffusion.video.VideoDenoiser` through each block's
``post_spatial`` slot, and to a diffusers ``UNet3DConditionModel``/``UNetMotionModel`` through the attention
processors of their spatial self-attention layers (:meth:`BoximatorControl.attach_diffusers`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..diffusion.attention import Attention
from .boxes import ID_COLOURS, SLOTS, BoxConditions


class FourierEmbedder(nn.Module):
    """Per scalar x: [sin(x·T^{k/F}), cos(x·T^{k/F})] for k < F (T = 100, F = 8: GLIGEN's ``FourierEmbedder``).

    ``(..., S) → (..., S·2F)``, laid out as diffusers' ``get_fourier_embeds_from_boundingbox`` lays out its 4
    box coordinates (frequency-major, then sin/cos, then scalar), so on boxes alone the two agree exactly."""

    def __init__(self, num_freqs: int = 8, temperature: float = 100.0):
        super().__init__()
        self.num_freqs = num_freqs
        self.register_buffer("freqs", temperature ** (torch.arange(num_freqs) / num_freqs), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = x[..., None] * self.freqs.to(x)  # (..., S, F)
        emb = torch.stack([emb.sin(), emb.cos()], dim=-1)  # (..., S, F, 2)
        return emb.movedim(-3, -1).flatten(-3)  # (..., F, 2, S) → (..., F·2·S)


class BoxTokenEncoder(nn.Module):
    """``BoxConditions → (B, T, N, token_dim)``: Fourier features of [box, ID colour, hard flag] through an
    MLP with 3 hidden layers; inactive slots become the learnable null token."""

    def __init__(self, token_dim: int = 128, hidden: int = 256, num_freqs: int = 8):
        super().__init__()
        self.fourier = FourierEmbedder(num_freqs)
        d_in = 8 * 2 * num_freqs
        self.mlp = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, token_dim),
        )
        self.null = nn.Parameter(torch.zeros(token_dim))
        self.register_buffer("id_colours", ID_COLOURS.clone(), persistent=False)

    def features(self, cond: BoxConditions) -> torch.Tensor:
        """The 8 scalars of each slot: (x0, y0, x1, y1, r, g, b, hard)."""
        rgb = self.id_colours[cond.ids.clamp(min=0)]  # (B,N,3)
        rgb = rgb[:, None].expand(*cond.boxes.shape[:3], 3)
        return torch.cat([cond.boxes.float(), rgb, cond.hard.float()[..., None]], dim=-1)

    def forward(self, cond: BoxConditions) -> torch.Tensor:
        feats = self.features(cond).to(self.null.device)
        tokens = self.mlp(self.fourier(feats))
        return torch.where(cond.active.to(tokens.device)[..., None], tokens, self.null.to(tokens.dtype))


def cell_boxes(n_tokens: int, device=None) -> torch.Tensor:
    """The normalised box ``(HW, 4)`` of each cell of a square token grid, row-major (the visual tokens' layout)."""
    side = int(round(n_tokens**0.5))
    if side * side != n_tokens:
        raise ValueError(f"expected a square grid of visual tokens, got {n_tokens}")
    i = torch.arange(side, device=device, dtype=torch.float32)
    y0, x0 = torch.meshgrid(i / side, i / side, indexing="ij")
    x0, y0 = x0.flatten(), y0.flatten()
    return torch.stack([x0, y0, x0 + 1 / side, y0 + 1 / side], dim=-1)


class BoxSelfAttention(nn.Module):
    """The new layer: gated self-attention over [one frame's visual tokens; its box tokens], visual outputs kept.

    ``cell_position=True`` (our addition, not in the paper): inside this layer only, each visual token gets a learnt
    projection of the Fourier features of its own grid cell, in the same basis as the box corners. Our compact base
    gives its tokens no explicit position (convolutions know position only through the zero padding at the
    border), and we found that with the plain layer the boxes had no measurable effect on where objects appear
    within our training budget. With the cell features, "is this token inside that box" becomes a comparison that
    attention can learn quickly. The frozen base's own tokens and layers are unchanged."""

    def __init__(self, dim: int, token_dim: int, heads: int = 4, gate: str = "zero_out", cell_position: bool = True):
        super().__init__()
        if gate not in ("tanh", "zero_out"):
            raise ValueError(f"gate must be 'tanh' or 'zero_out', got {gate!r}")
        self.gate = gate
        self.fourier = FourierEmbedder()
        self.position = nn.Linear(4 * 16, dim) if cell_position else None
        self.linear = nn.Linear(token_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads=heads)
        if gate == "tanh":
            self.alpha = nn.Parameter(torch.zeros(()))  # GLIGEN's gate, tanh(0) = 0
        else:
            nn.init.zeros_(self.attn.to_out.weight)  # a zero output projection: the layer starts silent
            nn.init.zeros_(self.attn.to_out.bias)

    def forward(self, visual: torch.Tensor, box_tokens: torch.Tensor) -> torch.Tensor:
        """``visual (B·T, HW, C)``, ``box_tokens (B·T, N, token_dim)`` → ``visual + g·TS(...)``."""
        n_visual = visual.shape[1]
        here = visual
        if self.position is not None:  # each visual token also says where it is (see the class docstring)
            here = visual + self.position(self.fourier(cell_boxes(n_visual, visual.device)).to(visual.dtype))
        joint = torch.cat([here, self.linear(box_tokens.to(visual.dtype))], dim=1)
        out = self.attn(self.norm(joint), role="box")[:, :n_visual]  # TS: token selection
        return visual + (self.alpha.tanh() * out if self.gate == "tanh" else out)


class _PostSpatialBoxLayer(nn.Module):
    """Adapter for the video block's ``post_spatial`` slot: reads ``extra["box_tokens"] (B·T, N, D)``."""

    def __init__(self, layer: BoxSelfAttention, control: BoximatorControl):
        super().__init__()
        # plain references, not submodules: the control owns the weights, and the base's state_dict stays
        # the base's own
        self._refs = (layer, control)

    def forward(self, tok: torch.Tensor, frames: int, extra: dict) -> torch.Tensor:
        layer, control = self._refs
        box_tokens = extra.get("box_tokens")
        if box_tokens is None:  # no constraints at all: every slot is the null token
            box_tokens = control.null_tokens(tok.shape[0]).to(tok.dtype)
        return layer(tok, box_tokens)


class BoximatorControl(nn.Module):
    """The trainable part: the token encoder and one :class:`BoxSelfAttention` per spatial block."""

    def __init__(
        self,
        dims: list[int],
        token_dim: int = 128,
        hidden: int = 256,
        heads: int = 4,
        slots: int = SLOTS,
        gate: str = "zero_out",
        cell_position: bool = True,
    ):
        super().__init__()
        self.dims = list(dims)
        self.slots = slots
        self.encoder = BoxTokenEncoder(token_dim, hidden)
        self.layers = nn.ModuleList([BoxSelfAttention(d, token_dim, heads, gate, cell_position) for d in dims])
        self._adapters: list[tuple[nn.ModuleList, nn.Module]] = []
        self._hooks: list = []
        self._diffusers_tokens: torch.Tensor | None = None

    def null_tokens(self, batch_frames: int) -> torch.Tensor:
        return self.encoder.null.expand(batch_frames, self.slots, -1)

    def tokens(self, cond: BoxConditions | None, batch: int, frames: int) -> torch.Tensor:
        """Box tokens flattened per frame ``(B·T, N, D)`` (all null for ``cond=None``)."""
        if cond is None:
            return self.null_tokens(batch * frames)
        cond.validate(frames)
        if cond.boxes.shape[0] != batch:
            raise ValueError(f"box conditions have batch {cond.boxes.shape[0]} but the video has {batch}")
        tok = self.encoder(cond)
        if tok.shape[2] < self.slots:  # pad to the fixed N slots with null tokens
            pad = self.encoder.null.expand(batch, frames, self.slots - tok.shape[2], -1)
            tok = torch.cat([tok, pad], dim=2)
        return tok.flatten(0, 1)

    # -- our video denoiser --------------------------------------------------------------------------------
    def attach(self, model) -> BoximatorControl:
        """Insert one box layer into every transformer block of a ``VideoDenoiser`` (``post_spatial``)."""
        blocks = model.transformer_blocks()
        if [b.norm_spatial.normalized_shape[0] for b in blocks] != self.dims:
            raise ValueError(
                f"control built for widths {self.dims} but the model's blocks have "
                f"{[b.norm_spatial.normalized_shape[0] for b in blocks]}"
            )
        self.detach()
        for block, layer in zip(blocks, self.layers):
            adapter = _PostSpatialBoxLayer(layer, self)
            block.post_spatial.append(adapter)
            self._adapters.append((block.post_spatial, adapter))
        return self

    def detach(self) -> None:
        for slot, adapter in self._adapters:
            idx = [i for i, m in enumerate(slot) if m is adapter]
            for i in reversed(idx):
                del slot[i]
        self._adapters = []
        for h in self._hooks:
            h.remove()
        self._hooks = []

    # -- diffusers video UNets -------------------------------------------------------------------------------
    @staticmethod
    def diffusers_spatial_blocks(unet) -> list[nn.Module]:
        """The ``BasicTransformerBlock``s of a diffusers ``UNet3DConditionModel``/``UNetMotionModel`` that do
        *spatial* attention (inside ``.attentions``; the temporal ones live in ``temp_attentions`` /
        ``motion_modules``)."""
        from diffusers.models.attention import BasicTransformerBlock

        return [
            m
            for name, m in unet.named_modules()
            if isinstance(m, BasicTransformerBlock)
            and ".attentions." in f".{name}"
            and "temp" not in name
            and "motion" not in name
        ]

    @classmethod
    def for_diffusers(cls, unet, **kwargs) -> BoximatorControl:
        dims = [blk.attn1.to_q.in_features for blk in cls.diffusers_spatial_blocks(unet)]
        return cls(dims, **kwargs)

    def attach_diffusers(self, unet) -> BoximatorControl:
        """Attach through attention processors: each spatial block's self-attention (``attn1``) gets a
        processor that runs the original attention and then our box layer, so the block computes
        v + SelfAttn(v) + g·TS(...) before its cross-attention, as in our own blocks. The block's
        input v is read with a forward pre-hook (``attn1`` itself only sees LayerNorm(v))."""
        from diffusers.models.attention_processor import AttnProcessor2_0

        blocks = self.diffusers_spatial_blocks(unet)
        if len(blocks) != len(self.layers):
            raise ValueError(f"control has {len(self.layers)} layers but the UNet has {len(blocks)} spatial blocks")
        self.detach()
        for block, layer in zip(blocks, self.layers):
            proc = _DiffusersBoxProcessor(layer, self, block.attn1.processor or AttnProcessor2_0())
            block.attn1.set_processor(proc)
            self._hooks.append(block.register_forward_pre_hook(proc.remember_input, with_kwargs=True))
            self._hooks.append(_Restore(block.attn1, proc.inner))
        return self

    @contextmanager
    def conditioned(self, tokens: torch.Tensor):
        """Within the block, the attached diffusers UNet reads these box tokens ``(B·F, N, D)``."""
        self._diffusers_tokens = tokens
        try:
            yield
        finally:
            self._diffusers_tokens = None


class _Restore:
    """A 'hook' whose ``remove`` puts the original processor back."""

    def __init__(self, attn, processor):
        self.attn, self.processor = attn, processor

    def remove(self) -> None:
        self.attn.set_processor(self.processor)


class _DiffusersBoxProcessor:
    def __init__(self, layer: BoxSelfAttention, control: BoximatorControl, inner):
        self.layer, self.control, self.inner = layer, control, inner
        self._input: torch.Tensor | None = None

    def remember_input(self, _module, args, kwargs):
        self._input = args[0] if args else kwargs["hidden_states"]

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        v = self._input
        if v is None or v.shape[:2] != out.shape[:2]:
            raise RuntimeError("the box processor did not see its block's input")
        tokens = self.control._diffusers_tokens
        if tokens is None:
            tokens = self.control.null_tokens(v.shape[0])
        if tokens.shape[0] != v.shape[0]:
            raise ValueError(f"box tokens are for {tokens.shape[0]} frames but the UNet runs {v.shape[0]}")
        v1 = v + out
        return self.layer(v1, tokens) - v  # the block adds v back: v + SelfAttn + gated box attention
