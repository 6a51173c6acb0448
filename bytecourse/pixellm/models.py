"""PixelLM (arXiv 2312.02228 §3, as ``model/PixelLM.py`` and ``mask_decoder_multi_scale.py`` of the released code
build it), at toy scale: an image encoder, a LLaVA-style language model, the **segmentation codebook**, **token
fusion** and the **light pixel decoder**, plus the LISA-style baseline.

**Image encoder** (CLIP ViT-L/14's frozen role; :class:`ImageEncoder`): a convolutional CLIP tower (64×64 input,
two stride-2 convolutions → a 16×16 grid, six residual blocks; a transformers ``ViTModel`` with 4×4 patches is the
``arch="vit"`` option, and the class doc says why it is not the default: it never learnt the shapes' kinds),
pretrained contrastively on world images and their descriptions plus a region–phrase term (:class:`CLIPPretrainer`,
stage 1) and frozen after. It gives two feature levels, as ``clip_encoder.feature_select`` does: the penultimate
layer (the LLaVA default, ``select_layer = −2``) and a middle one (the toy of ``hidden_states[−11]`` of 25).

**Language model** (LLaVA; :class:`VisionLanguageModel`): the penultimate layer, reduced 2× to 8×8 = 64 visual
tokens (the code's 32×32 → 16×16), goes through ``mm_projector`` (an MLP) into a tiny Llama (transformers
``LlamaConfig``) ahead of ``[BOS] question [SEP]``. The reduction concatenates each 2×2 block's features
(``pixel_unshuffle``) where the code downsamples bilinearly: measured on a first stage-2 run, bilinear 8×8 tokens of
these 3–8-pixel-radius shapes left the language model naming the right targets in 0.28 of few-target answers, mostly
by confusing the kinds (an object covers one or two tokens here, a dozen in the paper's 448-px images).

Stage 2 trains projector and Llama *in full* on text-only answers: there is no pretrained chat model at toy scale,
so this stage plays LLaVA's pretraining, and the arms then tune it the way PixelLM tunes LLaVA — **LoRA** (r 8, α 16,
on ``q_proj`` / ``v_proj``), plus ``embed_tokens`` and ``lm_head`` in full (they hold the codebook's rows). So every
arm is a small delta on one shared encoder and language model.

**Codebook** (§3.2): L scales × N tokens, ``[SEG0] … [SEG{L·N−1}]``, one group per target in the answer — so the
number of targets is the number of groups the model writes. **Which hidden state feeds the decoder** (LISA's
convention, kept by the code): ``mask[t] = (ids[t+1] is a codebook token)``, i.e. the last-layer state at the
position *before* each codebook token (the state that predicts it), through ``text_hidden_fcs`` (Linear, ReLU,
Linear) and reshaped ``[targets, L, N, d]``, scale-major. **Token fusion**: per scale, ``Σ_n w_{ℓ,n} e_{ℓ,n}`` with
``w`` initialised to 1/N — registered parameters here (the released code keeps them in Python lists, so they never
train: the paper calls them learnable).

**Light pixel decoder** (§3.3, :class:`PixelDecoder`): both feature levels go through ``out_mm_projector`` and a
shared neck (1×1 conv, LayerNorm2d, 3×3 conv, LayerNorm2d). One SAM-style two-way transformer per scale (depth 2):
tokens ``[mask token, fused target token] + level embedding`` against that scale's features plus a random-Fourier
position encoding. The deepest scale goes first, on the 16×16 grid; the shallower one is upsampled 2× to 32×32 and
**multiplied by (1 + σ(m⁰))**, m⁰ the deeper level's mask (the code's form; the paper writes σ). Each level's mask is
a hypernetwork dot product (SAM: an MLP on the mask token's output against the upscaled features; one 2× transposed
conv here, SAM has two); the masks are resized to 64×64 and combined as ``M̂ = Σ_ℓ γ_ℓ m^ℓ`` (γ registered, 1/L at
first). SAM's IoU token and extra mask tokens are left out: ``multimask_output=False`` uses mask token 0 only and no
loss reaches the IoU head.

**Losses** (§3.4): ``CE_text + 2·BCE + 0.5·Dice`` per mask, averaged over the masks; the **target refinement loss**
(the code's ``overlap_loss``) as an option: BCE on the pixels that ≥ 2 of a question's predicted masks claim
(a positive logit), averaged over those pixels, summed over the masks and divided by their number.

**LISA-style baseline** (``lisa=True``): N = 1, L = 1, and the decoder reads a *second* image encoder — the same
design at 2× input resolution (128×128 → a 32×32 grid, standing in for SAM's ViT-H), pretrained the same way — in
place of the language model's own encoder. Its cost is the point of PixelLM's efficiency claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import JSONConfig
from ..diffusion.lora import LoRA
from ..validation import check_float, check_int
from .data import IMAGE_SIZE, MAX_CODEBOOK, PAD_ID, SEG_IDS, VOCAB, WORD_TO_ID


# --------------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class EncoderConfig(JSONConfig):
    arch: str = "conv"  # "conv": a convolutional CLIP tower (the default, see ImageEncoder); "vit": a ViT
    image_size: int = IMAGE_SIZE
    patch: int = 4  # the feature grid's stride: the ViT's patch, or 2^(stride-2 convolutions) of the conv tower
    width: int = 64
    layers: int = 6
    heads: int = 4  # the ViT's attention heads (unused by the conv tower)
    deep_layer: int = -2  # the LLaVA default: the penultimate layer
    shallow_layer: int = 3  # hidden_states[3] of 7: the toy of hidden_states[-11] of 25

    def validate(self) -> None:
        if self.arch not in ("conv", "vit"):
            raise ValueError(f"arch must be 'conv' or 'vit', got {self.arch!r}")
        check_int("image_size", self.image_size, 8)
        check_int("patch", self.patch, 1)
        if self.image_size % self.patch:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch {self.patch}")
        if self.arch == "conv" and self.patch & (self.patch - 1):
            raise ValueError(f"the conv tower's stride (patch) must be a power of 2, got {self.patch}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


@dataclass(frozen=True)
class LMConfig(JSONConfig):
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    merge: int = 2  # each 2×2 block of the 16×16 features becomes one of 8×8 = 64 visual tokens (see the doc)
    max_positions: int = 256
    #: a learned position table on the visual tokens from stage 2 on (zero at initialisation), kept by every arm
    #: (frozen, or trained with :attr:`PixelLMConfig.visual_positions`, whose comment holds the measurements)
    visual_positions: bool = True

    def llama(self):
        from transformers import LlamaConfig

        config = LlamaConfig(
            vocab_size=len(VOCAB),
            hidden_size=self.hidden,
            intermediate_size=2 * self.hidden,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.heads,
            max_position_embeddings=self.max_positions,
            rope_theta=1000.0,
            pad_token_id=PAD_ID,
            tie_word_embeddings=False,
        )
        config._attn_implementation = "sdpa"
        return config


@dataclass(frozen=True)
class PixelLMConfig(JSONConfig):
    """An arm: N tokens per group, L scales, the refinement loss, the LISA-style baseline."""

    tokens: int = 3  # N
    scales: int = 2  # L
    refine: float = 0.0  # the target refinement loss's weight (0: off, as the released training)
    lisa: bool = False  # the LISA-style baseline: a second, 2×-resolution image encoder feeds the decoder
    decoder_dim: int = 32
    decoder_depth: int = 2
    decoder_heads: int = 2
    lora_rank: int = 8
    lora_alpha: float = 16.0
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    #: a learned position table on the visual tokens (zero at initialisation, trained with the arm). CLIP's ViT
    #: carries its position embeddings into every feature; the conv tower that stands in for it here carries
    #: absolute position only through its zero padding (convolutions are translation-equivariant), so the language
    #: model must place an object mostly through the visual tokens' sequence positions, read from answer tokens
    #: whose distance to them changes with the question's length.
    #: Measured (2026-12-07, main arm, seed 0, 3,000 steps, evaluation seed 0): its
    #: answers name the right colours and kinds in 0.938 of the few-target questions but also the right grid cells
    #: in only 0.594 (many-target: 0.792 and 0.292), and where the answer is exactly right the gIoU with its own
    #: answer equals the teacher-forced one (0.951 on 21 of 48 questions): the place words are the gap. With this
    #: table trained in the arm stage (not shipped): exact 0.562 / 0.271, gIoU few 0.627 (was 0.644), many 0.705
    #: (0.691) — no gain. The place words are learnt in stage 2, which never saw the table. Measured there
    #: (2026-12-07, the shipped stage-2 model's own answers): on 48 few-target questions (evaluation seed 0) colour
    #: and kind are right in 0.958, places too in only 0.521; on 119 single-target answers with the right colour
    #: and kind (96 questions of evaluation seeds 0 and 1 each), the place is right in 0.664, no better far from a
    #: cell line (0.667 for centres ≥ 0.08 of the image away) than near one (0.581 within 0.03), and 14 of the 40
    #: misses are two cells off (left for right, top for bottom): not ambiguity at cell borders but a language
    #: model that cannot read where a visual token sits. The arm stage inherits the gap (places right in 0.500 of
    #: its colour-and-kind-right answers). With the table in stage 2 (:attr:`LMConfig.visual_positions`, 8,000 steps,
    #: 31 min, not shipped), on 192 questions per split (evaluation seeds 0 and 1): places right 0.568 → 0.703 (few)
    #: and 0.302 → 0.417 (many), colour and kind level (0.922 → 0.922, 0.833 → 0.828); single-target places 0.664 →
    #: 0.783, misses two cells off 14/40 → 4/26 (one training seed). So the table belongs in stage 2: it is on there
    #: by default since 2026-12-07 (stage 2 retrained and shipped with it; the arms are retrained on it seed by seed,
    #: older arm runs listed as stale). This flag trains it on in the arm stage too (off: the arm keeps stage 2's
    #: table frozen; on a stage-2 model without one, it adds one).
    visual_positions: bool = False

    def validate(self) -> None:
        check_int("N (tokens per scale)", self.tokens, 1)
        check_int("L (scales)", self.scales, 1, 2)
        if self.tokens * self.scales > MAX_CODEBOOK:
            raise ValueError(f"L·N = {self.tokens * self.scales} codebook tokens; at most {MAX_CODEBOOK} exist")
        if self.lisa and (self.tokens, self.scales) != (1, 1):
            raise ValueError("the LISA-style baseline has one [SEG] token: tokens=1, scales=1")
        check_float("refine", self.refine, 0.0)
        check_int("lora_rank", self.lora_rank, 1)

    @property
    def group(self) -> int:
        return self.tokens * self.scales


# --------------------------------------------------------------------------------------------- image encoder
class ConvTower(nn.Module):
    """The convolutional tower: a stem of stride-2 convolutions down to the feature grid (``patch`` = its stride),
    then ``layers`` residual blocks (3×3 conv → GroupNorm → GELU) at that grid. ``hidden_states`` as a ViT's: the
    stem's output, then each block's, so ``deep_layer`` / ``shallow_layer`` index both towers alike."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        w = config.width

        def block(i: int, o: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1), nn.GroupNorm(8, o), nn.GELU())

        downs = int(math.log2(config.patch))
        widths = [32] + [w] * downs
        self.stem = nn.Sequential(block(3, 32), *[block(widths[k], widths[k + 1], 2) for k in range(downs)])
        self.blocks = nn.ModuleList([block(w, w) for _ in range(config.layers)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        hs = [self.stem(x)]
        for b in self.blocks:
            hs.append(hs[-1] + b(hs[-1]))
        return hs


class ImageEncoder(nn.Module):
    """The frozen image encoder (CLIP's role), returning two feature levels as ``(B, width, grid, grid)`` maps and
    a pooled ``cls`` vector for the contrastive stage.

    ``arch="conv"`` (the default) is a convolutional tower (:class:`ConvTower`; OpenCLIP ships ConvNeXt CLIP towers
    beside its ViTs); ``arch="vit"`` a transformers ``ViTModel`` (4×4 patches → a 16×16 grid), as CLIP ViT-L/14.
    Why not the ViT: measured on this world (linear probe of an object's kind from its mean-pooled penultimate
    features, chance 0.33; :func:`~bytecourse.pixellm.evaluate.probe_encoder`), the ViT pretrained contrastively for
    1,200 steps names the kind with 0.44 (0.46 with NegCLIP hard negatives), and with 0.50 after 500 steps of
    the region–phrase term below; a conv tower with that term reaches 0.998 in 300 steps (a plain CNN with a kind
    head: 0.99 in 150). A from-scratch ViT on a few thousand toy images does not learn shape in a CPU budget (ViTs
    lack a CNN's locality prior and need far more data, Dosovitskiy et al. 2021); CLIP's ViT had 400 M pairs.

    ``input_size`` (default: the size it was built for) runs it on images bilinearly resized to that size (the ViT
    with its position table interpolated, as PixelLM resizes CLIP's to 448 px): the LISA-style baseline's second
    encoder is the pretrained one at 2× resolution, a 32×32 grid."""

    def __init__(self, config: EncoderConfig = EncoderConfig(), input_size: int | None = None):
        super().__init__()
        config.validate()
        self.config = config
        self.input_size = input_size or config.image_size
        if self.input_size % config.patch:
            raise ValueError(f"input_size {self.input_size} is not a multiple of patch {config.patch}")
        if config.arch == "conv":
            self.tower = ConvTower(config)
            return
        from transformers import ViTConfig, ViTModel

        self.vit = ViTModel(
            ViTConfig(
                image_size=config.image_size,
                patch_size=config.patch,
                num_channels=3,
                hidden_size=config.width,
                num_hidden_layers=config.layers,
                num_attention_heads=config.heads,
                intermediate_size=4 * config.width,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
                attn_implementation="sdpa",
            ),
            add_pooling_layer=False,
        )

    @property
    def grid(self) -> int:
        return self.input_size // self.config.patch

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        check_image_batch(images)
        if self.input_size != images.shape[-1]:
            images = F.interpolate(images, size=self.input_size, mode="bilinear", align_corners=False)
        if self.config.arch == "conv":
            hs = self.tower(images * 2 - 1)
            return {
                "deep": hs[self.config.deep_layer],
                "shallow": hs[self.config.shallow_layer],
                "cls": hs[-1].mean((2, 3)),
            }
        out = self.vit(
            pixel_values=images * 2 - 1,
            output_hidden_states=True,
            interpolate_pos_encoding=self.input_size != self.config.image_size,
        )
        g = self.grid

        def grid(h: torch.Tensor) -> torch.Tensor:
            return h[:, 1:].transpose(1, 2).reshape(h.shape[0], -1, g, g)  # drop [CLS]

        hs = out.hidden_states
        return {
            "deep": grid(hs[self.config.deep_layer]),
            "shallow": grid(hs[self.config.shallow_layer]),
            "cls": out.last_hidden_state[:, 0],
        }


def check_image_batch(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got an empty batch")
    if images.shape[-1] != IMAGE_SIZE or images.shape[-2] != IMAGE_SIZE:
        raise ValueError(f"images must be {IMAGE_SIZE}×{IMAGE_SIZE}, got {tuple(images.shape[-2:])}")
    if float(images.min()) < 0 or float(images.max()) > 1:
        raise ValueError("images must lie in [0, 1]")
    return images


class CLIPPretrainer(nn.Module):
    """Stage 1: an image encoder and a small text encoder trained with CLIP's symmetric InfoNCE (learnable τ) on
    world images and their descriptions (:func:`~bytecourse.pixellm.data.contrastive_captions`), plus, optionally,
    a **region–phrase** term (RegionCLIP's region–concept alignment, Zhong et al. 2022): each object's deep features,
    mean-pooled over its mask, against the text features of every ``<colour> <kind>`` phrase. Only the image encoder
    is kept, frozen, as PixelLM keeps CLIP's.

    Why the region term: the global objective never needs the kinds. Measured (conv tower, 300 steps, NegCLIP
    negatives on): an image tells its caption from the one with an object's kind swapped in 0.54 of cases and a
    linear probe names an object's kind with 0.49 (chance 0.50 and 0.33) — colours and places already identify the
    caption in a batch, CLIP's binding problem; with the region term, 0.94 and 0.998."""

    def __init__(self, encoder: EncoderConfig = EncoderConfig(), text_width: int = 64, max_words: int = 48):
        super().__init__()
        self.image = ImageEncoder(encoder)
        self.embed = nn.Embedding(len(VOCAB), text_width, padding_idx=PAD_ID)
        self.positions = nn.Parameter(torch.randn(max_words, text_width) * 0.02)
        layer = nn.TransformerEncoderLayer(text_width, 4, 4 * text_width, 0.0, batch_first=True, norm_first=True)
        self.text = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.image_proj = nn.Linear(encoder.width, 64, bias=False)
        self.region_proj = nn.Linear(encoder.width, 64, bias=False)
        self.text_proj = nn.Linear(text_width, 64, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def text_features(self, captions: list[str]) -> torch.Tensor:
        ids = [[WORD_TO_ID[w] for w in c.split()] for c in captions]
        length = max(len(i) for i in ids)
        x = torch.full((len(ids), length), PAD_ID, dtype=torch.long)
        for k, row in enumerate(ids):
            x[k, : len(row)] = torch.tensor(row)
        x = x.to(self.positions.device)
        pad = x == PAD_ID
        h = self.text(self.embed(x) + self.positions[:length], src_key_padding_mask=pad)
        h = (h * ~pad[..., None]).sum(1) / (~pad).sum(1, keepdim=True)
        return F.normalize(self.text_proj(h), dim=-1)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.image(images)["cls"]), dim=-1)

    def loss(
        self,
        images: torch.Tensor,
        captions: list[str],
        negatives: list[str] | None = None,
        regions: tuple[torch.Tensor, torch.Tensor, list[str]] | None = None,
        region_weight: float = 1.0,
    ) -> torch.Tensor:
        """Symmetric InfoNCE over the batch; ``negatives`` (optional, NegCLIP-style swapped-attribute captions) join
        the image→text side only, so an image must tell its caption from one with a kind or a colour changed.
        ``regions = (masks, labels, phrases)`` adds ``region_weight`` × :meth:`region_loss`."""
        scale = self.log_scale.exp().clamp(max=100)
        features = self.image(images)
        img = F.normalize(self.image_proj(features["cls"]), dim=-1)
        txt = self.text_features(captions + (negatives or []))
        logits = scale * img @ txt.T
        labels = torch.arange(len(captions), device=logits.device)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, : len(captions)].T, labels)) / 2
        if regions is not None:
            loss = loss + region_weight * self.region_loss(features["deep"], *regions)
        return loss

    def region_loss(
        self, deep: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, phrases: list[str]
    ) -> torch.Tensor:
        """Cross-entropy of each object's region feature against all phrases: ``masks`` (B, K, H, W) at image
        resolution (all-zero slots are skipped), ``labels`` (B, K) the index of each object's phrase."""
        m = F.interpolate(masks.float(), size=deep.shape[-2:], mode="area")
        area = m.flatten(2).sum(-1)
        keep = area > 0
        pooled = torch.einsum("bchw,bkhw->bkc", deep, m) / area.clamp(min=1e-6)[..., None]
        region = F.normalize(self.region_proj(pooled[keep]), dim=-1)
        logits = self.log_scale.exp().clamp(max=100) * region @ self.text_features(phrases).T
        return F.cross_entropy(logits, labels.to(deep.device)[keep])


# --------------------------------------------------------------------------------------------- language model
class VisionLanguageModel(nn.Module):
    """LLaVA at toy scale: frozen image encoder → ``mm_projector`` → a tiny Llama reading 64 visual tokens ahead of
    the text. ``forward`` returns the logits and last-layer hidden states over the whole sequence."""

    def __init__(self, encoder: ImageEncoder, lm: LMConfig = LMConfig()):
        super().__init__()
        from transformers import LlamaForCausalLM

        self.encoder = encoder.requires_grad_(False)
        self.lm_config = lm
        self.llm = LlamaForCausalLM(lm.llama())
        if encoder.grid % lm.merge:
            raise ValueError(f"the {encoder.grid}-wide feature grid does not split into {lm.merge}×{lm.merge} blocks")
        w = encoder.config.width * lm.merge**2
        self.mm_projector = nn.Sequential(nn.Linear(w, 2 * lm.hidden), nn.GELU(), nn.Linear(2 * lm.hidden, lm.hidden))
        # (1, visual_tokens, hidden) added to the visual tokens, or None: see PixelLMConfig.visual_positions
        self.register_parameter("position_table", None)
        if lm.visual_positions:
            self.position_table = nn.Parameter(torch.zeros(1, self.visual_tokens, lm.hidden))

    @property
    def visual_tokens(self) -> int:
        return (self.encoder.grid // self.lm_config.merge) ** 2

    def visual_prefix(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The penultimate layer, each ``merge × merge`` block's features concatenated (``pixel_unshuffle``), through
        ``mm_projector``: ``(B, visual_tokens, hidden)``."""
        merged = F.pixel_unshuffle(features["deep"], self.lm_config.merge)
        prefix = self.mm_projector(merged.flatten(2).transpose(1, 2))
        return prefix if self.position_table is None else prefix + self.position_table

    def forward(
        self, images: torch.Tensor, ids: torch.Tensor, features: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``(logits, hidden, features)`` for ``[visual tokens] + ids``; ``logits[:, V + t]`` predicts ``ids[t+1]``."""
        if features is None:
            with torch.no_grad():
                features = self.encoder(images)
        prefix = self.visual_prefix(features)
        tok = self.llm.get_input_embeddings()(ids)
        mask = torch.cat([torch.ones(ids.shape[0], prefix.shape[1], dtype=torch.long, device=ids.device),
                          (ids != PAD_ID).long()], 1)  # fmt: skip
        out = self.llm(inputs_embeds=torch.cat([prefix, tok], 1), attention_mask=mask, output_hidden_states=True)
        return out.logits, out.hidden_states[-1], features

    def text_loss(self, logits: torch.Tensor, ids: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the answer's tokens (each predicted from the position before it)."""
        v = self.visual_tokens
        pred = logits[:, v : v + ids.shape[1] - 1]
        return F.cross_entropy(pred[answer[:, 1:]], ids[:, 1:][answer[:, 1:]])

    @torch.no_grad()
    def generate(self, images: torch.Tensor, prompts: list[list[int]], max_new: int = 70) -> list[list[int]]:
        """Greedy answers (token ids, up to ``[EOS]``), batched over prompts of equal length with a KV cache."""
        from .data import EOS_ID

        out: list[list[int]] = [[] for _ in prompts]
        features = self.encoder(images)
        by_length: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            by_length.setdefault(len(p), []).append(i)
        for idx in by_length.values():
            sub = {k: v[idx] for k, v in features.items()}
            ids = torch.tensor([prompts[i] for i in idx], device=images.device)
            x = torch.cat([self.visual_prefix(sub), self.llm.get_input_embeddings()(ids)], 1)
            res = self.llm(inputs_embeds=x, use_cache=True)
            cache = res.cache if hasattr(res, "cache") else res.past_key_values
            done = torch.zeros(len(idx), dtype=torch.bool, device=images.device)
            for _ in range(max_new):
                nxt = res.logits[:, -1].argmax(-1)
                for k, i in enumerate(idx):
                    if not done[k]:
                        out[i].append(int(nxt[k]))
                done |= nxt == EOS_ID
                if bool(done.all()):
                    break
                res = self.llm(
                    inputs_embeds=self.llm.get_input_embeddings()(nxt[:, None]), cache=cache, use_cache=True
                )
                cache = res.cache if hasattr(res, "cache") else res.past_key_values
        return out


def add_llm_lora(llm: nn.Module, rank: int, alpha: float) -> nn.ModuleDict:
    """LoRA on every ``q_proj`` and ``v_proj`` (the code's ``lora_target_modules``), keyed by path."""
    deltas = nn.ModuleDict()
    for path, module in llm.named_modules():
        if path.endswith(("q_proj", "v_proj")) and isinstance(module, nn.Linear):
            deltas[path.replace(".", "__")] = LoRA(module, rank, alpha)
    return deltas


# --------------------------------------------------------------------------------------------- pixel decoder
class LayerNorm2d(nn.Module):
    def __init__(self, c: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * (x - u) / torch.sqrt(s + self.eps) + self.bias[:, None, None]


class FourierPositions(nn.Module):
    """SAM's ``PositionEmbeddingRandom``: sin/cos of a fixed random projection of the normalised (x, y)."""

    def __init__(self, dim: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("gaussian", torch.randn(2, dim // 2, generator=g))

    def forward(self, h: int, w: int) -> torch.Tensor:
        ys = (torch.arange(h, device=self.gaussian.device) + 0.5) / h
        xs = (torch.arange(w, device=self.gaussian.device) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1) * 2 - 1  # (h, w, 2)
        proj = 2 * math.pi * grid @ self.gaussian
        return torch.cat([proj.sin(), proj.cos()], -1).permute(2, 0, 1)  # (dim, h, w)


class Attention(nn.Module):
    """SAM's attention with an optional internal downsampling of the width (cross-attention uses 2)."""

    def __init__(self, dim: int, heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, inner), nn.Linear(dim, inner), nn.Linear(dim, inner)
        self.out = nn.Linear(inner, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

        o = F.scaled_dot_product_attention(split(self.q(q)), split(self.k(k)), split(self.v(v)))
        return self.out(o.transpose(1, 2).flatten(2))


class TwoWayBlock(nn.Module):
    """SAM's ``TwoWayAttentionBlock``: token self-attention, token → image cross-attention, MLP, image → token."""

    def __init__(self, dim: int, heads: int, mlp: int, skip_first_pe: bool):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.t2i = Attention(dim, heads, 2)
        self.i2t = Attention(dim, heads, 2)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.ReLU(), nn.Linear(mlp, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))
        self.skip_first_pe = skip_first_pe

    def forward(self, t, img, t_pe, img_pe):
        if self.skip_first_pe:
            t = self.self_attn(t, t, t)
        else:
            q = t + t_pe
            t = t + self.self_attn(q, q, t)
        t = self.norms[0](t)
        t = self.norms[1](t + self.t2i(t + t_pe, img + img_pe, img))
        t = self.norms[2](t + self.mlp(t))
        img = self.norms[3](img + self.i2t(img + img_pe, t + t_pe, t))
        return t, img


class TwoWayTransformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp: int):
        super().__init__()
        self.blocks = nn.ModuleList(TwoWayBlock(dim, heads, mlp, i == 0) for i in range(depth))
        self.final = Attention(dim, heads, 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, img: torch.Tensor, img_pe: torch.Tensor, tokens: torch.Tensor):
        """``img (n, C, h, w)``, ``img_pe (C, h, w)``, ``tokens (n, T, C)`` → updated tokens and image tokens."""
        n, c, h, w = img.shape
        img = img.flatten(2).transpose(1, 2)
        pe = img_pe.flatten(1).T[None].expand(n, -1, -1)
        t = tokens
        for block in self.blocks:
            t, img = block(t, img, tokens, pe)
        t = self.norm(t + self.final(t + tokens, img + pe, img))
        return t, img.transpose(1, 2).reshape(n, c, h, w)


class PixelDecoder(nn.Module):
    """The light decoder: one two-way transformer per scale, deepest first, the shallower modulated by
    ``(1 + σ(m_deeper))``; SAM-style hypernetwork masks; ``M̂ = Σ_ℓ γ_ℓ m^ℓ`` at 64×64."""

    def __init__(self, feature_width: int, config: PixelLMConfig, scales: int):
        super().__init__()
        d = config.decoder_dim
        self.scales = scales
        self.out_mm_projector = nn.Sequential(nn.Linear(feature_width, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.neck = nn.Sequential(
            nn.Conv2d(d, d, 1, bias=False), LayerNorm2d(d), nn.Conv2d(d, d, 3, padding=1, bias=False), LayerNorm2d(d)
        )
        self.pe = FourierPositions(d)
        self.mask_token = nn.Parameter(torch.randn(1, d) * 0.02)
        self.level_embed = nn.Parameter(torch.randn(scales, d) * 0.02)
        self.transformers = nn.ModuleList(
            TwoWayTransformer(d, config.decoder_depth, config.decoder_heads, 4 * d) for _ in range(scales)
        )
        self.upscale = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(d, d // 4, 2, 2), LayerNorm2d(d // 4), nn.GELU()) for _ in range(scales)
        )
        self.hyper = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d // 4))
            for _ in range(scales)
        )
        self.gamma = nn.Parameter(torch.full((scales,), 1.0 / scales))

    def project(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.out_mm_projector(feature.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.neck(x)

    def forward(self, features: list[torch.Tensor], owner: torch.Tensor, targets: torch.Tensor) -> dict:
        """``features[ℓ] (B, C, h, w)`` per image, deepest first; ``owner (n,)`` each target's image; ``targets
        (n, L, d)`` the fused tokens → ``{"masks": (n, 64, 64) logits, "levels": [per-level logits]}``. The
        projection and neck run once per image, the rest once per target."""
        levels, previous = [], None
        for lvl in range(self.scales):
            f = self.project(features[lvl])[owner]
            if lvl > 0:  # the shallower scale at 2× the deeper one's grid, modulated by its mask
                f = F.interpolate(f, scale_factor=2, mode="bilinear", align_corners=False)
                m = F.interpolate(previous[:, None], size=f.shape[-2:], mode="bilinear", align_corners=False)
                f = f * (1 + torch.sigmoid(m))
            tokens = torch.stack([self.mask_token.expand(len(f), -1), targets[:, lvl]], 1) + self.level_embed[lvl]
            t, img = self.transformers[lvl](f, self.pe(*f.shape[-2:]), tokens)
            up = self.upscale[lvl](img)
            w = self.hyper[lvl](t[:, 0])
            mask = torch.einsum("nc,nchw->nhw", w, up)
            levels.append(mask)
            previous = mask
        size = (IMAGE_SIZE, IMAGE_SIZE)
        resized = [F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0] for m in levels]
        return {"masks": sum(g * m for g, m in zip(self.gamma, resized)), "levels": levels}


# --------------------------------------------------------------------------------------------- PixelLM
def codebook_states(hidden: torch.Tensor, ids: torch.Tensor, visual: int, group: int) -> tuple[torch.Tensor, list]:
    """The decoder's inputs, LISA's convention: for every codebook token at text position t, the last-layer state at
    sequence position ``visual + t − 1`` (the one that predicts it). Returns ``(targets·group, d)`` states, grouped
    in order, and per row of the batch the number of complete groups. A group is ``[SEG0] … [SEG{group−1}]`` in
    order; a malformed run (wrong order, cut short) yields no target."""
    seg = torch.tensor(SEG_IDS[:group], device=ids.device)
    rows, counts = [], []
    for b in range(ids.shape[0]):
        row = ids[b].tolist()
        n = 0
        t = 0
        while t <= len(row) - group:
            if row[t] == SEG_IDS[0] and row[t : t + group] == seg.tolist():
                rows.append(hidden[b, visual + t - 1 : visual + t - 1 + group])
                n += 1
                t += group
            else:
                t += 1
        counts.append(n)
    d = hidden.shape[-1]
    return (torch.cat(rows) if rows else hidden.new_zeros(0, d)), counts


class PixelLM(nn.Module):
    """A vision-language model that answers with masks: codebook + token fusion + light decoder (module doc)."""

    def __init__(self, vlm: VisionLanguageModel, config: PixelLMConfig, sam: ImageEncoder | None = None):
        super().__init__()
        config.validate()
        if config.lisa and sam is None:
            raise ValueError("the LISA-style baseline needs its second image encoder (sam=…)")
        self.config = config
        self.vlm = vlm.requires_grad_(False)
        self.sam = sam.requires_grad_(False) if config.lisa else None
        self.lora = add_llm_lora(vlm.llm, config.lora_rank, config.lora_alpha)
        for p in (*vlm.llm.get_input_embeddings().parameters(), *vlm.llm.get_output_embeddings().parameters()):
            p.requires_grad_(True)  # embed_tokens and lm_head are trained in full (they hold the codebook's rows)
        vlm.mm_projector.requires_grad_(True)
        hidden, d = vlm.lm_config.hidden, config.decoder_dim
        if config.visual_positions and vlm.position_table is None:
            vlm.position_table = nn.Parameter(torch.zeros(1, vlm.visual_tokens, hidden))
        elif config.visual_positions:  # stage 2 learnt one (LMConfig.visual_positions): the arm goes on training it
            vlm.position_table.requires_grad_(True)
        self.text_hidden_fcs = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, d))
        self.fusion = nn.Parameter(torch.full((config.scales, config.tokens), 1.0 / config.tokens))
        width = (sam or vlm.encoder).config.width
        self.decoder = PixelDecoder(width, config, config.scales)

    def decoder_features(self, images: torch.Tensor, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        if self.sam is not None:
            with torch.no_grad():
                return [self.sam(images)["deep"]]
        return [features["deep"], features["shallow"]][: self.config.scales]

    def fuse(self, states: torch.Tensor) -> torch.Tensor:
        """``(targets·L·N, hidden)`` states → ``text_hidden_fcs`` → ``[targets, L, N, d]`` → Σ_n w_{ℓ,n} e_{ℓ,n}."""
        c = self.config
        e = self.text_hidden_fcs(states).view(-1, c.scales, c.tokens, c.decoder_dim)
        return torch.einsum("tlnd,ln->tld", e, self.fusion)

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> dict:
        """Teacher-forced pass: logits, and one mask per complete codebook group (in answer order)."""
        logits, hidden, features = self.vlm(images, ids)
        states, counts = codebook_states(hidden, ids, self.vlm.visual_tokens, self.config.group)
        owner = torch.repeat_interleave(
            torch.arange(len(counts), device=ids.device), torch.tensor(counts).to(ids.device)
        )
        out = {"logits": logits, "counts": counts}
        if len(owner) == 0:
            out["masks"] = images.new_zeros(0, IMAGE_SIZE, IMAGE_SIZE)
            return out
        out |= self.decoder(self.decoder_features(images, features), owner, self.fuse(states))
        return out

    def loss(self, images: torch.Tensor, ids: torch.Tensor, answer: torch.Tensor, masks: list[torch.Tensor]):
        """``CE_text + 2·BCE + 0.5·Dice`` (+ ``refine``·the target refinement loss); returns (total, parts)."""
        out = self.forward(images, ids)
        text = self.vlm.text_loss(out["logits"], ids, answer)
        truth = torch.cat([m.float() for m in masks]).to(images.device)
        if out["masks"].shape[0] != truth.shape[0]:
            raise ValueError(f"{out['masks'].shape[0]} codebook groups in the answers but {truth.shape[0]} masks")
        pred = out["masks"]
        bce = F.binary_cross_entropy_with_logits(pred, truth, reduction="none").flatten(1).mean(1).mean()
        dice = dice_loss(pred, truth).mean()
        parts = {"text": text, "bce": bce, "dice": dice}
        total = text + self.config.bce_weight * bce + self.config.dice_weight * dice
        if self.config.refine > 0:
            parts["refine"] = refinement_loss(pred, truth, out["counts"])
            total = total + self.config.refine * parts["refine"]
        return total, parts


def dice_loss(logits: torch.Tensor, truth: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per mask ``1 − (2Σpq + ε)/(Σp + Σq + ε)`` with ``p = σ(logits)`` (the code's ``dice_loss``, eps 1e-6)."""
    p = torch.sigmoid(logits).flatten(1)
    q = truth.flatten(1)
    return 1 - (2 * (p * q).sum(1) + eps) / (p.sum(1) + q.sum(1) + eps)


def refinement_loss(logits: torch.Tensor, truth: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """The target refinement loss (the code's ``overlap_loss``): per question, the pixels that ≥ 2 of its predicted
    masks claim (positive logit); each mask's BCE averaged over those pixels, summed over masks, divided by the
    number of masks. Zero where no pixel is claimed twice."""
    total, start = logits.new_zeros(()), 0
    for n in counts:
        lg, tr = logits[start : start + n], truth[start : start + n]
        start += n
        if n < 2:
            continue
        overlap = ((lg > 0).sum(0) >= 2).float()  # (H, W), no gradient: where the masks collide
        if float(overlap.sum()) == 0:
            continue
        bce = F.binary_cross_entropy_with_logits(lg, tr, reduction="none")
        total = total + ((bce * overlap).flatten(1).sum(1) / overlap.sum()).sum()
    return total / max(len(logits), 1)
