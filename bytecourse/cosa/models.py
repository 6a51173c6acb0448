"""COSA's model (arXiv 2306.09085 §3, as ``model/modeling.py`` and ``model/pretrain.py`` of the released code
build it), at toy scale: a frame encoder, one BERT used in three ways, and the four pretraining objectives.

**Video side** (``COSAModel.get_multimodal_forward_input_video``). Each frame goes through the frame encoder (a
small ViT, transformers' ``ViTModel``, standing in for Swin-B / CLIP ViT) on its own; its tokens go through
Linear + LayerNorm to the text width, a learnable **frame embedding** ``E[f]`` is added to every token of frame
``f`` (its length is the number of frames in pretraining, K·n; another frame count, up to ``max_frames``, reads it
by nearest-neighbour interpolation, as the code does), and the ``F × x`` tokens are flattened into one memory for
BERT's cross-attention. Without the frame embedding (the ablation) nothing in the memory says which frame a token came
from, and cross-attention is permutation-invariant over its memory: that model is *exactly* blind to frame order.

**Text side: one BERT, three ways.** The paper's BERT-base is used text-only (ITC), bidirectionally with
cross-attention (ITM, MLM), and with a causal self-attention mask and cross-attention (captioning). Transformers
5's ``BertModel`` ties causal masking and cross-attention to ``config.is_decoder``; built with ``is_decoder=True``
and ``add_cross_attention=True`` and always given an explicit 4-D self-attention mask (bidirectional or causal),
the same weights serve all three: without ``encoder_hidden_states`` its cross-attention is skipped.

**Objectives** (all weighted equally, §3.2):

- **ITC**: ``s(v, t) = ⟨g_v(mean_f v_f), g_t(t_[CLS])⟩ / τ`` between the mean-pooled frames' [CLS] features and the
  text-only [CLS]; τ learnable from 0.07; symmetric cross-entropy with label smoothing 0.1 over the batch. Mean
  pooling forgets frame order, so ITC alone can never learn it.
- **ITM**: a 2-way head on the multimodal [CLS]; for each of the first ⌈B/3⌉ pairs one negative video and one
  negative text drawn in proportion to ``softmax(s)`` (the positive excluded) — hard negatives.
- **MLM**: 15 % of the caption's words selected; 80 % of those → [MASK], 10 % → a random word, 10 % kept (BERT).
- **Captioning**: a causal mask and 60 % of the words replaced by [MASK]; only masked positions are predicted.
  Generation appends one [MASK] at a time and writes the prediction in its place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import JSONConfig
from ..validation import check_float, check_int
from .data import CLS_ID, FIRST_WORD_ID, MASK_ID, PAD_ID, SEP_ID, VOCAB, tokenize

TASKS = ("ret", "cret", "ccap", "cmlm")  # the Base configuration's task string: ret_cret_ccap_cmlm


@dataclass(frozen=True)
class COSAConfig(JSONConfig):
    image_size: int = 32
    patch: int = 8
    vision_width: int = 64
    vision_layers: int = 2
    width: int = 64  # BERT's hidden size
    layers: int = 2
    heads: int = 4
    contrast_dim: int = 64
    frame_embedding: int = 4  # its length K·n in pretraining; 0: no frame embedding (the ablation)
    max_frames: int = 16  # the most frames a video may have: the frame embedding is resampled up to this length
    max_text: int = 56  # [CLS] + ≤ 54 words + [SEP]
    temperature: float = 0.07
    label_smoothing: float = 0.1
    mlm_prob: float = 0.15
    cap_prob: float = 0.6

    def validate(self) -> None:
        check_int("image_size", self.image_size, 8)
        check_int("patch", self.patch, 1, self.image_size)
        if self.image_size % self.patch:
            raise ValueError(f"patch={self.patch} must divide image_size={self.image_size}")
        for name in ("vision_width", "width", "contrast_dim"):
            check_int(name, getattr(self, name), 8)
        for name in ("vision_layers", "layers", "heads"):
            check_int(name, getattr(self, name), 1)
        if self.width % self.heads or self.vision_width % self.heads:
            raise ValueError(f"heads={self.heads} must divide width={self.width} and vision_width")
        check_int("max_frames", self.max_frames, 1, 64)
        check_int("frame_embedding", self.frame_embedding, 0, self.max_frames)
        check_int("max_text", self.max_text, 4)
        check_float("temperature", self.temperature, 1e-3, 1.0)
        check_float("label_smoothing", self.label_smoothing, 0.0, 0.5)
        check_float("mlm_prob", self.mlm_prob, 0.0, 1.0)
        check_float("cap_prob", self.cap_prob, 0.0, 1.0)


def bidirectional_mask(pad: torch.Tensor) -> torch.Tensor:
    """``(B, 1, L, L)`` boolean self-attention mask: every query sees every non-padding key."""
    return pad[:, None, None, :].expand(-1, 1, pad.shape[1], -1)


def causal_mask(pad: torch.Tensor) -> torch.Tensor:
    """``(B, 1, L, L)``: query *j* sees non-padding keys ≤ *j* (the captioning mode)."""
    length = pad.shape[1]
    tril = torch.ones(length, length, dtype=torch.bool, device=pad.device).tril()
    return tril[None, None] & pad[:, None, None, :]


def resize_frame_embedding(embedding: torch.Tensor, frames: int) -> torch.Tensor:
    """``(1, F, D)`` → ``(1, frames, D)`` by nearest-neighbour interpolation (the code's rule for another frame
    count); frame ``f`` reads entry ``⌊f·F / frames⌋``."""
    if embedding.shape[1] == frames:
        return embedding
    index = (torch.arange(frames, device=embedding.device) * embedding.shape[1]) // frames
    return embedding[:, index]


class COSAModel(nn.Module):
    """Frame encoder + frame embedding + one BERT + the ITC / ITM / LM heads (see the module docstring)."""

    def __init__(self, config: COSAConfig | None = None):
        super().__init__()
        from transformers import BertConfig, BertModel, ViTConfig, ViTModel
        from transformers.models.bert.modeling_bert import BertOnlyMLMHead

        self.config = config = config or COSAConfig()
        config.validate()
        self.vision = ViTModel(
            ViTConfig(
                image_size=config.image_size,
                patch_size=config.patch,
                num_channels=3,
                hidden_size=config.vision_width,
                num_hidden_layers=config.vision_layers,
                num_attention_heads=config.heads,
                intermediate_size=4 * config.vision_width,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
                attn_implementation="sdpa",
            ),
            add_pooling_layer=False,
        )
        self.bert_config = BertConfig(
            vocab_size=len(VOCAB),
            hidden_size=config.width,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            intermediate_size=4 * config.width,
            max_position_embeddings=config.max_text,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            is_decoder=True,  # only so that cross-attention exists; the self-attention mask is always explicit
            add_cross_attention=True,
            use_cache=False,
            pad_token_id=PAD_ID,
            attn_implementation="sdpa",
        )
        self.bert = BertModel(self.bert_config, add_pooling_layer=False)
        self.frame_proj = nn.Sequential(nn.Linear(config.vision_width, config.width), nn.LayerNorm(config.width))
        self.frame_embedding = (
            nn.Parameter(torch.randn(1, config.frame_embedding, config.width) * 0.02)
            if config.frame_embedding
            else None
        )
        self.video_contrast = nn.Linear(config.vision_width, config.contrast_dim)
        self.text_contrast = nn.Linear(config.width, config.contrast_dim)
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1 / config.temperature)))
        self.itm_head = nn.Linear(config.width, 2)
        self.lm_head = BertOnlyMLMHead(self.bert_config)
        self.lm_head.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tied, as BERT

    def tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and attention mask of ``texts`` (at most ``max_text`` tokens each), cut to the longest one: padding
        is masked out everywhere, so the cut changes no output, only the cost."""
        ids, pad = tokenize(texts, self.config.max_text)
        longest = int(pad.sum(1).max())
        return ids[:, :longest], pad[:, :longest]

    # ---------------------------------------------------------------- video side
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """ViT tokens ``(B, F, x, vision_width)`` of frames ``(B, F, 3, H, W)`` in [0, 1], each frame on its own."""
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be (B, F, 3, H, W), got {tuple(frames.shape)}")
        if frames.shape[0] == 0 or frames.shape[1] == 0:
            raise ValueError("frames must hold at least one video of at least one frame")
        if frames.shape[1] > self.config.max_frames:
            raise ValueError(
                f"a video of {frames.shape[1]} frames is longer than the frame embedding reaches "
                f"(max_frames={self.config.max_frames})"
            )
        b, f = frames.shape[:2]
        out = self.vision(pixel_values=frames.flatten(0, 1) * 2 - 1).last_hidden_state
        return out.view(b, f, *out.shape[1:])

    def video_memory(self, tokens: torch.Tensor) -> torch.Tensor:
        """Cross-attention memory ``(B, F·x, width)``: Linear + LayerNorm, + frame embedding per frame, flattened."""
        memory = self.frame_proj(tokens)
        if self.frame_embedding is not None:
            memory = memory + resize_frame_embedding(self.frame_embedding, tokens.shape[1])[:, :, None]
        return memory.flatten(1, 2)

    def video_feature(self, tokens: torch.Tensor) -> torch.Tensor:
        """ITC's video side: the frames' [CLS] tokens averaged over frames (order-blind), projected, unit norm."""
        return F.normalize(self.video_contrast(tokens[:, :, 0].mean(1)), dim=-1)

    # ---------------------------------------------------------------- text side
    def text_states(self, ids: torch.Tensor, pad: torch.Tensor, memory=None, causal: bool = False) -> torch.Tensor:
        mask = causal_mask(pad) if causal else bidirectional_mask(pad)
        return self.bert(input_ids=ids, attention_mask=mask, encoder_hidden_states=memory).last_hidden_state

    def text_feature(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """ITC's text side: the text-only [CLS], projected, unit norm."""
        return F.normalize(self.text_contrast(self.text_states(ids, pad)[:, 0]), dim=-1)

    def itm_logits(self, ids: torch.Tensor, pad: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """ITM's 2-way logits ``(B, 2)`` (index 1: matched) from the multimodal [CLS]."""
        return self.itm_head(self.text_states(ids, pad, memory)[:, 0])

    def itm_score(self, frames: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """``log p(match)`` of each (video, text) pair — the order-sensitive retrieval score."""
        ids, pad = self.tokens(texts)
        ids, pad = ids.to(frames.device), pad.to(frames.device)
        memory = self.video_memory(self.encode_frames(frames))
        return self.itm_logits(ids, pad, memory).log_softmax(-1)[:, 1]

    # ---------------------------------------------------------------- objectives
    def similarity(self, video: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        return video @ texts.T * self.log_inv_temperature.clamp(max=math.log(100)).exp()

    def itc_loss(self, sim: torch.Tensor) -> torch.Tensor:
        return itc_loss(sim, self.config.label_smoothing)

    def itm_loss(
        self, ids: torch.Tensor, pad: torch.Tensor, memory: torch.Tensor, sim: torch.Tensor, generator
    ) -> torch.Tensor:
        """Matched pairs, and for each of the first ⌈B/3⌉ a hard negative video and a hard negative text drawn
        ∝ softmax(s) with the positive excluded (the code's third of the batch)."""
        b = ids.shape[0]
        if b < 2:
            return memory.sum() * 0
        n = math.ceil(b / 3)
        neg_video, neg_text = hard_negatives(sim, n, generator)
        neg_video, neg_text = neg_video.to(ids.device), neg_text.to(ids.device)
        all_ids = torch.cat([ids[:n], ids[:n], ids[neg_text]])
        all_pad = torch.cat([pad[:n], pad[:n], pad[neg_text]])
        all_memory = torch.cat([memory[:n], memory[neg_video], memory[:n]])
        labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).long().to(ids.device)
        return F.cross_entropy(self.itm_logits(all_ids, all_pad, all_memory), labels)

    def mlm_loss(self, ids: torch.Tensor, pad: torch.Tensor, memory: torch.Tensor, generator) -> torch.Tensor:
        """BERT's MLM on the caption given the video: 15 % of words, 80/10/10."""
        inputs, labels = mask_words(ids, self.config.mlm_prob, generator, bert_rule=True)
        logits = self.lm_head(self.text_states(inputs, pad, memory))
        return masked_ce(logits, labels, memory)

    def caption_loss(self, ids: torch.Tensor, pad: torch.Tensor, memory: torch.Tensor, generator) -> torch.Tensor:
        """Captioning: causal self-attention, 60 % of words → [MASK], predicted at their own positions."""
        inputs, labels = mask_words(ids, self.config.cap_prob, generator, bert_rule=False)
        logits = self.lm_head(self.text_states(inputs, pad, memory, causal=True))
        return masked_ce(logits, labels, memory)

    def losses(self, samples, tasks: tuple[str, ...], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """ITC + ITM (``"ret"`` / ``"cret"``), captioning (``"ccap"``) and MLM (``"cmlm"``) on one batch of
        ``Samples``; the caller picks which tasks a batch (single or concatenated) trains."""
        device = next(self.parameters()).device
        ids, pad = (t.to(device) for t in self.tokens(samples.texts))
        tokens = self.encode_frames(samples.frames.to(device))
        memory = self.video_memory(tokens)
        out = {}
        if "ret" in tasks:
            sim = self.similarity(self.video_feature(tokens), self.text_feature(ids, pad))
            out["itc"] = self.itc_loss(sim)
            out["itm"] = self.itm_loss(ids, pad, memory, sim.detach(), generator)
        if "cap" in tasks:
            out["cap"] = self.caption_loss(ids, pad, memory, generator)
        if "mlm" in tasks:
            out["mlm"] = self.mlm_loss(ids, pad, memory, generator)
        return out

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def caption_logprob(self, frames: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """``(B,)`` mean log-probability of each text's words and its [SEP] under the captioning mode, exactly as
        generation reads them: word *j* is predicted from a [MASK] at *j* after the true words before it (one
        causal pass per position; later words never matter under the causal mask)."""
        ids, pad = self.tokens(texts)
        ids, pad = ids.to(frames.device), pad.to(frames.device)
        memory = self.video_memory(self.encode_frames(frames))
        total = torch.zeros(ids.shape[0], device=frames.device)
        count = pad[:, 1:].sum(1)
        for j in range(1, int(pad.sum(1).max())):
            step = ids[:, : j + 1].clone()
            step[:, j] = MASK_ID
            logits = self.lm_head(self.text_states(step, pad[:, : j + 1], memory, causal=True))[:, j]
            logp = logits.float().log_softmax(-1).gather(1, ids[:, j : j + 1])[:, 0]
            total = total + torch.where(pad[:, j], logp, torch.zeros_like(logp))
        return total / count

    @torch.no_grad()
    def retrieval_features(self, frames: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, pad = self.tokens(texts)
        device = frames.device
        return self.video_feature(self.encode_frames(frames)), self.text_feature(ids.to(device), pad.to(device))

    @torch.no_grad()
    def generate(self, frames: torch.Tensor, max_words: int | None = None) -> list[str]:
        """Greedy captioning: append a [MASK], predict it under the causal mask, write it, until [SEP]."""
        max_words = max_words or self.config.max_text - 2
        b, device = frames.shape[0], frames.device
        memory = self.video_memory(self.encode_frames(frames))
        ids = torch.full((b, 1), CLS_ID, dtype=torch.long, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        for _ in range(max_words):
            step = torch.cat([ids, torch.full((b, 1), MASK_ID, device=device)], dim=1)
            logits = self.lm_head(self.text_states(step, torch.ones_like(step, dtype=torch.bool), memory, True))
            logits[..., [PAD_ID, CLS_ID, MASK_ID]] = -torch.inf  # words or [SEP]
            nxt = logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, SEP_ID), nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == SEP_ID
            if bool(done.all()):
                break
        return _detok(ids)


def _detok(ids: torch.Tensor) -> list[str]:
    from .data import detokenize

    return detokenize(ids)


@torch.no_grad()
def hard_negatives(sim: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """ITM's negatives for the first ``n`` pairs of a batch whose ITC logits are ``sim[i, j]`` = video i · text j:
    text i's negative video drawn ∝ softmax over column i, video i's negative text ∝ softmax over row i (ALBEF's
    ``weights_t2i`` / ``weights_i2t``), the positive excluded. Returns ``(neg_video, neg_text)``, each ``(n,)``."""
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)[:n]
    text_to_video = (sim[:, :n].T.float().softmax(-1) + 1e-6).masked_fill(eye, 0)
    video_to_text = (sim[:n].float().softmax(-1) + 1e-6).masked_fill(eye, 0)
    neg_video = torch.multinomial(text_to_video.cpu(), 1, generator=generator)[:, 0]
    neg_text = torch.multinomial(video_to_text.cpu(), 1, generator=generator)[:, 0]
    return neg_video, neg_text


def itc_loss(sim: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE over a batch's similarity logits ``sim (B, B)`` (row i: video i against every text; the
    diagonal holds the matched pairs), with label smoothing: ½·[CE(sim, I) + CE(simᵀ, I)]."""
    target = torch.arange(sim.shape[0], device=sim.device)
    ls = label_smoothing
    return (F.cross_entropy(sim, target, label_smoothing=ls) + F.cross_entropy(sim.T, target, label_smoothing=ls)) / 2


def mask_words(
    ids: torch.Tensor, prob: float, generator: torch.Generator, bert_rule: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels (−100 where not predicted) with each word chosen with ``prob``; chosen words become [MASK]
    — or, with ``bert_rule`` (MLM), [MASK] 80 %, a random word 10 %, kept 10 %. Without ``bert_rule`` (captioning)
    the closing [SEP] is a word too: a captioner that never predicts it never learns to stop. [CLS] and [PAD] are
    never chosen. At least one word per caption is chosen, so every caption contributes."""
    words = ids >= FIRST_WORD_ID if bert_rule else (ids >= FIRST_WORD_ID) | (ids == SEP_ID)
    u = torch.rand(ids.shape, generator=generator).to(ids.device)
    chosen = words & (u < prob)
    first = words.float().argmax(1)  # a caption with nothing chosen predicts its first word
    none = ~chosen.any(1)
    chosen[none, first[none]] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    inputs = ids.clone()
    if bert_rule:
        v = torch.rand(ids.shape, generator=generator).to(ids.device)
        random_words = torch.randint(FIRST_WORD_ID, len(VOCAB), ids.shape, generator=generator).to(ids.device)
        inputs = torch.where(chosen & (v < 0.8), torch.full_like(ids, MASK_ID), inputs)
        inputs = torch.where(chosen & (v >= 0.8) & (v < 0.9), random_words, inputs)
    else:
        inputs = torch.where(chosen, torch.full_like(ids, MASK_ID), inputs)
    return inputs, labels


def masked_ce(logits: torch.Tensor, labels: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    if not bool((labels != -100).any()):
        return anchor.sum() * 0
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
