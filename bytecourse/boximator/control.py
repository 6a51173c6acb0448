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
variants use ``zero_out``; the tanh gate stays available and tested. (Those measurements were on the first,
from-scratch base; the shipped variants now sit on the inflated one.)

Two more choices of ours, each measured (see :class:`BoxSelfAttention` and :class:`BoximatorControl`): the visual
tokens attend only to the active slots and one sink token (``masked_slots``), and their logits for a slot get a
bias proportional to how much of their cell lies inside its box (``box_bias``).

The module attaches to our video denoisers through their ``post_spatial`` slots: the course's inflated video
model (:meth:`~bytecourse.diffusion.inflate.InflatedVideoDenoiser.post_spatial_slots`: inside every spatial
transformer at 8×8 and 4×4, and at the input of the 16×16 motion modules, where the primer has no spatial
attention) and the old :class:`~bytecourse.diffusion.video.VideoDenoiser`; and to a diffusers
``UNet3DConditionModel``/``UNetMotionModel`` through the attention processors of their spatial self-attention
layers (:meth:`BoximatorControl.attach_diffusers`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn

from ..diffusion.attention import Attention
from .boxes import ID_COLOURS, SLOTS, BoxConditions


class BoxTokens(NamedTuple):
    """What the box layers read, per frame: ``tokens (B·T, N, D)``, ``active (B·T, N)`` (``None``: every slot is
    attended, the paper's unmasked null tokens) and the slots' boxes ``(B·T, N, 4)`` (``None``: no geometry, e.g.
    all slots null), which the layers' box-overlap attention bias reads."""

    tokens: torch.Tensor
    active: torch.Tensor | None = None
    boxes: torch.Tensor | None = None

    @staticmethod
    def cat(items: list[BoxTokens]) -> BoxTokens:
        tokens = torch.cat([i.tokens for i in items])
        shape = lambda i: i.tokens.shape[:2]  # noqa: E731
        active = boxes = None
        if any(i.active is not None for i in items):
            active = torch.cat(
                [
                    torch.ones(shape(i), dtype=torch.bool, device=tokens.device)
                    if i.active is None
                    else i.active.to(tokens.device)
                    for i in items
                ]
            )
        if any(i.boxes is not None for i in items):
            boxes = torch.cat(
                [
                    torch.zeros(*shape(i), 4, device=tokens.device) if i.boxes is None else i.boxes.to(tokens.device)
                    for i in items
                ]
            )
        return BoxTokens(tokens, active, boxes)


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


def cell_overlap(n_tokens: int, boxes: torch.Tensor) -> torch.Tensor:
    """``(..., N, 4)`` boxes → ``(..., HW, N)``: the fraction of each grid cell's area that lies inside each box."""
    cells = cell_boxes(n_tokens, boxes.device).to(boxes.dtype)  # (HW, 4)
    c, b = cells[:, None, :], boxes[..., None, :, :]  # (HW, 1, 4) against (..., 1, N, 4)
    w = (torch.minimum(c[..., 2], b[..., 2]) - torch.maximum(c[..., 0], b[..., 0])).clamp(min=0)
    h = (torch.minimum(c[..., 3], b[..., 3]) - torch.maximum(c[..., 1], b[..., 1])).clamp(min=0)
    return w * h / ((cells[:, 2] - cells[:, 0]) * (cells[:, 3] - cells[:, 1]))[:, None]


class BoxSelfAttention(nn.Module):
    """The new layer: gated self-attention over [one frame's visual tokens; its box tokens], visual outputs kept.

    Two additions of ours (not in the paper), each there because without it the boxes had no measurable effect
    within our CPU budget:

    - ``cell_position=True``: inside this layer only, each visual token gets a learnt projection of the Fourier
      features of its own grid cell, in the same basis as the box corners. Our compact base gives its tokens no
      explicit position (convolutions know position only through the zero padding at the border).
    - ``box_bias=β > 0``: the attention logit of a visual token at cell c for slot j's token gets
      ``+ β · |c ∩ box_j| / |c|`` (a fixed prior, the same for every head), so a token inside a box
      starts out reading that box's token, and one outside does not. This is the geometric prior of masked or
      biased cross-attention in layout-to-image work (e.g. the box-restricted attention of MIGC and
      "attention refocusing"), given to Boximator's self-attention; the learnt q·k is unchanged and free to
      add to it. Measured on the inflated base (stage 1, seed 0, 1,000 steps, DDIM 20, CFG 2, 8 clips) without
      it: AP50 0.007 with boxes vs 0.010 with the boxes of other clips, and at t = 900 an active slot got the same
      attention from tokens inside and outside its box (0.049 vs 0.059), i.e. the layer had not learnt *where*
      its box is.

    The frozen base's own tokens and layers are unchanged."""

    def __init__(
        self,
        dim: int,
        token_dim: int,
        heads: int = 4,
        gate: str = "zero_out",
        cell_position: bool = True,
        box_bias: float = 0.0,
    ):
        super().__init__()
        if gate not in ("tanh", "zero_out"):
            raise ValueError(f"gate must be 'tanh' or 'zero_out', got {gate!r}")
        self.gate = gate
        self.fourier = FourierEmbedder()
        self.position = nn.Linear(4 * 16, dim) if cell_position else None
        self.linear = nn.Linear(token_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads=heads)
        # a fixed prior (a learnt β would make SDPA return a gradient for the whole (HW × keys) bias: measured 2.5×
        # the layer's cost at 16×16 on the CPU); the learnt q·k adds to it
        self.register_buffer("box_bias", torch.full((heads,), float(box_bias)) if box_bias else None)
        if gate == "tanh":
            self.alpha = nn.Parameter(torch.zeros(()))  # GLIGEN's gate, tanh(0) = 0
        else:
            nn.init.zeros_(self.attn.to_out.weight)  # a zero output projection: the layer starts silent
            nn.init.zeros_(self.attn.to_out.bias)

    def forward(
        self,
        visual: torch.Tensor,
        box_tokens: torch.Tensor,
        active: torch.Tensor | None = None,
        sink: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``visual (B·T, HW, C)``, ``box_tokens (B·T, N, token_dim)`` → ``visual + g·TS(...)``.

        ``active (B·T, N)``: which slots the visual tokens may attend to (``None``: all, the paper's layer);
        ``sink (token_dim,)``: one token every visual token may always attend to (see
        :class:`BoximatorControl`'s ``masked_slots``); ``boxes (B·T, N, 4)``: the slots' boxes, for the overlap
        bias. Only the visual positions are computed as queries: TS keeps nothing else, and a visual token's
        output does not depend on the box tokens' queries."""
        joint, mask, n_visual = self._joint(visual, box_tokens, active, sink, boxes)
        out = self.attn(joint[:, :n_visual], joint, attn_mask=mask, role="box")  # TS: visual queries only
        return visual + (self.alpha.tanh() * out if self.gate == "tanh" else out)

    def _joint(self, visual, box_tokens, active, sink, boxes=None):
        """LN([v (+ cell positions); W h_box]) and the attention mask over its keys: boolean
        ``(B·T, 1, 1, HW + N)`` for the active slots, or additive ``(B·T, heads, HW, HW + N)`` with the overlap bias
        (−∞ on inactive slots); None when every key is attended without bias."""
        n_visual, n = visual.shape[1], visual.shape[0]
        here = visual
        if self.position is not None:  # each visual token also says where it is (see the class docstring)
            here = visual + self.position(self.fourier(cell_boxes(n_visual, visual.device)).to(visual.dtype))
        extra = 0
        if sink is not None:
            box_tokens = torch.cat([sink.to(box_tokens).expand(n, 1, -1), box_tokens], dim=1)
            extra = 1
        joint = self.norm(torch.cat([here, self.linear(box_tokens.to(visual.dtype))], dim=1))
        on = None if active is None else active.to(visual.device).bool()
        if self.box_bias is not None and boxes is not None:
            # + β_h |cell ∩ box_j| / |cell| on slot j's logit; −∞ on inactive slots
            bias = self.box_bias[None, :, None, None] * cell_overlap(n_visual, boxes.to(visual))[:, None]
            if on is not None:
                bias = bias.masked_fill(~on[:, None, None, :], float("-inf"))
            heads = self.attn.heads
            mask = torch.cat([visual.new_zeros(n, heads, n_visual, n_visual + extra), bias.to(visual.dtype)], dim=-1)
            return joint, mask, n_visual
        if on is None:
            return joint, None, n_visual
        keep = torch.ones(n, n_visual + extra, dtype=torch.bool, device=visual.device)
        return joint, torch.cat([keep, on], dim=1)[:, None, None, :], n_visual

    def attention_probs(
        self,
        visual: torch.Tensor,
        box_tokens: torch.Tensor,
        active: torch.Tensor | None = None,
        sink: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The layer's attention weights ``(B·T, heads, HW, HW + [1] + N)`` of each visual query over the visual
        keys, [the sink] and the slots (a diagnostic: how much a token inside a box attends to that box's token)."""
        joint, mask, n_visual = self._joint(visual, box_tokens, active, sink, boxes)
        attn = self.attn
        q, k = attn.split_heads(attn.to_q(joint[:, :n_visual])), attn.split_heads(attn.to_k(joint))
        logits = q @ k.transpose(-1, -2) / attn.head_dim**0.5
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
        return logits.softmax(dim=-1)


class _PostSpatialBoxLayer(nn.Module):
    """Adapter for the video block's ``post_spatial`` slot: reads ``extra["box_tokens"] (B·T, N, D)``."""

    def __init__(self, layer: BoxSelfAttention, control: BoximatorControl):
        super().__init__()
        # plain references, not submodules: the control owns the weights, and the base's state_dict stays
        # the base's own
        self._refs = (layer, control)

    def forward(self, tok: torch.Tensor, frames: int, extra: dict) -> torch.Tensor:
        layer, control = self._refs
        box = extra.get("box_tokens")
        if box is None:  # no constraints at all: every slot is the null token
            box = control.null_tokens(tok.shape[0])
        if not isinstance(box, BoxTokens):
            box = BoxTokens(box)
        if control.recorded is not None:  # a diagnostic asked for each layer's inputs
            control.recorded.append((layer, tok.detach(), box, control.sink()))
        return layer(tok, box.tokens.to(tok.dtype), box.active, control.sink(), box.boxes)


class BoximatorControl(nn.Module):
    """The trainable part: the token encoder and one :class:`BoxSelfAttention` per ``post_spatial`` slot.

    ``masked_slots`` (our change, on by default; ``False`` is the paper's GLIGEN layer): the visual tokens attend
    only to the *active* slots' tokens and to one learnable sink token (the null token), instead of to all N
    slots with every empty one holding the same null token. Unmasked, a one-object clip shows each visual token
    seven identical null tokens: a box-independent attention sink that outweighs the one box token and that the
    layer can use to say the same thing everywhere (measured on the first shipped variant: at t = 900 an active
    slot got the same attention from tokens inside and outside its box, 0.029 vs 0.031). With the mask, a token
    outside every box still has somewhere to put its attention (the sink), but that place is one token, the same
    in every clip."""

    def __init__(
        self,
        dims: list[int],
        token_dim: int = 128,
        hidden: int = 256,
        heads: int = 4,
        slots: int = SLOTS,
        gate: str = "zero_out",
        cell_position: bool = True,
        masked_slots: bool = True,
        box_bias: float = 0.0,
    ):
        super().__init__()
        self.dims = list(dims)
        self.slots = slots
        self.masked_slots = masked_slots
        self.encoder = BoxTokenEncoder(token_dim, hidden)
        self.layers = nn.ModuleList(
            [BoxSelfAttention(d, token_dim, heads, gate, cell_position, box_bias) for d in dims]
        )
        self._adapters: list[tuple[nn.ModuleList, nn.Module]] = []
        self._hooks: list = []
        self._diffusers_tokens: BoxTokens | None = None
        self.recorded: list | None = None

    @contextmanager
    def recording(self):
        """Within the block, every attached box layer appends ``(layer, visual tokens, BoxTokens, sink)`` to the
        yielded list, so a diagnostic can recompute its attention (:meth:`BoxSelfAttention.attention_probs`)."""
        self.recorded = []
        try:
            yield self.recorded
        finally:
            self.recorded = None

    def sink(self) -> torch.Tensor | None:
        """The one always-attended token of the masked layer (the null token), or None (paper's layer)."""
        return self.encoder.null if self.masked_slots else None

    def null_tokens(self, batch_frames: int) -> BoxTokens:
        """No constraints: every slot null (masked: none of them attended, only the sink)."""
        tokens = self.encoder.null.expand(batch_frames, self.slots, -1)
        if not self.masked_slots:
            return BoxTokens(tokens)
        return BoxTokens(tokens, torch.zeros(batch_frames, self.slots, dtype=torch.bool, device=tokens.device))

    def tokens(self, cond: BoxConditions | None, batch: int, frames: int) -> BoxTokens:
        """Box tokens flattened per frame ``(B·T, N, D)`` and their active flags (all null for ``cond=None``)."""
        if cond is None:
            return self.null_tokens(batch * frames)
        cond.validate(frames)
        if cond.boxes.shape[0] != batch:
            raise ValueError(f"box conditions have batch {cond.boxes.shape[0]} but the video has {batch}")
        tok = self.encoder(cond)
        active = cond.active.bool().to(tok.device)
        boxes = torch.where(active[..., None], cond.boxes.to(tok.device).float(), 0.0)  # no geometry when null
        if tok.shape[2] < self.slots:  # pad to the fixed N slots with null tokens
            pad = self.encoder.null.expand(batch, frames, self.slots - tok.shape[2], -1)
            tok = torch.cat([tok, pad], dim=2)
            active = torch.cat([active, active.new_zeros(batch, frames, self.slots - active.shape[2])], dim=2)
            boxes = torch.cat([boxes, boxes.new_zeros(batch, frames, self.slots - boxes.shape[2], 4)], dim=2)
        return BoxTokens(tok.flatten(0, 1), active.flatten(0, 1) if self.masked_slots else None, boxes.flatten(0, 1))

    # -- our video denoisers ---------------------------------------------------------------------------------
    @staticmethod
    def box_slots(model) -> list[tuple[nn.ModuleList, int]]:
        """``(slot, width)`` for every ``post_spatial`` slot of a video denoiser: the inflated model's
        (:meth:`~bytecourse.diffusion.inflate.InflatedVideoDenoiser.post_spatial_slots`: inside each spatial
        transformer, and at the motion module of the 16×16 levels, which have no spatial attention) or the old
        ``VideoDenoiser``'s transformer blocks."""
        if hasattr(model, "post_spatial_slots"):
            widths = model.post_spatial_widths()
            return [(slot, widths[name]) for name, slot in model.post_spatial_slots().items()]
        return [(b.post_spatial, b.norm_spatial.normalized_shape[0]) for b in model.transformer_blocks()]

    @classmethod
    def for_model(cls, model, **kwargs) -> BoximatorControl:
        """A control with one box layer per ``post_spatial`` slot of ``model``, at that slot's width."""
        return cls([w for _, w in cls.box_slots(model)], **kwargs)

    def attach(self, model) -> BoximatorControl:
        """Insert one box layer into every ``post_spatial`` slot of a video denoiser (:meth:`box_slots`)."""
        slots = self.box_slots(model)
        if [w for _, w in slots] != self.dims:
            raise ValueError(
                f"control built for widths {self.dims} but the model's slots have {[w for _, w in slots]}"
            )
        self.detach()
        for (slot, _), layer in zip(slots, self.layers):
            adapter = _PostSpatialBoxLayer(layer, self)
            slot.append(adapter)
            self._adapters.append((slot, adapter))
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
    def conditioned(self, tokens: BoxTokens | torch.Tensor):
        """Within the block, the attached diffusers UNet reads these box tokens ``(B·F, N, D)``."""
        self._diffusers_tokens = tokens if isinstance(tokens, BoxTokens) else BoxTokens(tokens)
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
        if tokens.tokens.shape[0] != v.shape[0]:
            raise ValueError(f"box tokens are for {tokens.tokens.shape[0]} frames but the UNet runs {v.shape[0]}")
        v1 = v + out
        return (
            self.layer(v1, tokens.tokens, tokens.active, self.control.sink(), tokens.boxes) - v
        )  # the block adds v back: v + SelfAttn + gated box attention
