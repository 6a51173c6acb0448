"""The tiny video narrator, set up as Vista-LLaMA is: a language model pretrained on narrations and then **frozen**;
a frame encoder + sequential visual projector trained on top — once with ordinary RoPE attention over all tokens,
once with EDVT, so the two narrators differ only in the attention rule (plus an EDVT narrator with the
*independent* projector, for the frame-order ablation).

Sequence layout (prompt lengths vary; the loss covers only the answer):

    <bos> [visual tokens: K segments × 3 frames × Q] [<fill> × F] describe | narration <eos>
    <bos> [visual tokens]                            [<fill> × F] which came first the X or the Y | the X <eos>

``rope_theta`` is small (our choice, see the notebook) so that RoPE's long-term decay is measurable at toy lengths.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .attention import enable_edvt
from .data import BOS_ID, EOS_ID, FILL_ID, FRAMES_PER_SEGMENT, PAD_ID, VOCAB, encode_words, make_episodes, order_question
from .projector import ProjectorConfig, SequentialProjector


@dataclass
class LMConfig:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    rope_theta: float = 200.0
    max_positions: int = 512

    def llama(self) -> LlamaConfig:
        cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=self.hidden, intermediate_size=2 * self.hidden,
                          num_hidden_layers=self.layers, num_attention_heads=self.heads, num_key_value_heads=self.heads,
                          rope_theta=self.rope_theta, max_position_embeddings=self.max_positions, pad_token_id=PAD_ID,
                          bos_token_id=BOS_ID, eos_token_id=EOS_ID, tie_word_embeddings=True)
        cfg._attn_implementation = "sdpa"
        return cfg


def build_lm(config: LMConfig = LMConfig(), seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return enable_edvt(LlamaForCausalLM(config.llama()))


def _warmup_cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    import math

    warm = max(1, steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))


def _pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    n = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (n - len(s)) for s in seqs])


def text_task(ep, i: int, task: str, g: torch.Generator) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) for episode i: the narration, or a frame-order question (falls back to narration)."""
    if task == "qa":
        qa = order_question(ep, i, g)
        if qa is not None:
            return encode_words(qa[0].split()), encode_words(qa[1].split()) + [EOS_ID]
    return encode_words(["describe"]), encode_words(ep.narrations[i].split()) + [EOS_ID]


# ------------------------------------------------------------------------------------------------ LM pretraining


@dataclass
class PretrainConfig:
    lm: LMConfig = field(default_factory=LMConfig)
    steps: int = 1500
    batch: int = 64
    lr: float = 2e-3
    segments: tuple[int, int] = (2, 4)
    max_fill: int = 24
    visual_slots: int = 12  # = frames per segment × projector queries: the prefix sits where the visual tokens will
    seed: int = 0


def text_prefix(ep, i: int, slots: int) -> list[int]:
    """The LM-pretraining stand-in for the visual tokens: per segment, its phrase's words in ``slots`` positions
    (padded with <fill>) — so the LM learns to read a prefix that describes the video, in order."""
    out = []
    for phrase in ep.phrases[i]:
        words = encode_words(phrase.split())[:slots]
        out += words + [FILL_ID] * (slots - len(words))
    return out


def lm_batch(step: int, config: PretrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Text-only sequences: <bos> [text prefix where the visual tokens will go] <fill>×F prompt answer <eos>; labels on
    prompt and answer. (A frozen LM that never had to read a prefix ignores one: LLaVA-style projector training
    relies on an LM that already uses its context, which this stage provides.)"""
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    ep = make_episodes(config.batch, 10_000_000 + config.seed * 100_000 + step, config.segments)
    seqs, labels = [], []
    for i in range(config.batch):
        prompt, answer = text_task(ep, i, "qa" if torch.rand(1, generator=g) < 0.5 else "narrate", g)
        fill = int(torch.randint(0, config.max_fill + 1, (1,), generator=g))
        prefix = text_prefix(ep, i, config.visual_slots)
        s = [BOS_ID] + prefix + [FILL_ID] * fill + prompt + answer
        seqs.append(s)
        labels.append([-100] * (1 + len(prefix) + fill) + prompt + answer)
    return _pad(seqs, PAD_ID), _pad(labels, -100)


def pretrain_lm(config: PretrainConfig = PretrainConfig(), progress: bool = True, on_step=None) -> tuple[LlamaForCausalLM, dict]:
    from tqdm.auto import tqdm

    lm = build_lm(config.lm, config.seed)
    opt = torch.optim.AdamW(lm.parameters(), lr=config.lr, weight_decay=0.0)
    sched = _warmup_cosine(opt, config.steps)
    t0, losses = time.time(), []
    lm.train()
    with torch.enable_grad():
        for step in tqdm(range(config.steps), disable=not progress, desc="LM pretraining"):
            ids, labels = lm_batch(step, config)
            loss = lm(input_ids=ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step, losses[-1])
    lm.eval().requires_grad_(False)
    return lm, {"steps": config.steps, "wall_time_s": round(time.time() - t0, 1), "final_loss": losses[-1], "losses": losses,
                "config": asdict(config)}


# ------------------------------------------------------------------------------------------------ the narrator


class Narrator(torch.nn.Module):
    """Projector (trainable) + frozen LM; ``attention`` is "rope" or "edvt"."""

    def __init__(self, lm: LlamaForCausalLM, projector: SequentialProjector, attention: str = "edvt"):
        super().__init__()
        if attention not in ("rope", "edvt"):
            raise ValueError(f"attention must be 'rope' or 'edvt', got {attention!r}")
        self.lm, self.projector, self.attention = lm, projector, attention
        self.lm.requires_grad_(False)

    def embed(self, videos: torch.Tensor, fills: list[int], prompts: list[list[int]], answers: list[list[int]]):
        """inputs_embeds, labels and the visual mask for a batch (right-padded)."""
        emb = self.lm.get_input_embeddings()
        vis = self.projector(videos)  # (B, V, D)
        b, v = vis.shape[:2]
        rows, labels, masks = [], [], []
        for i in range(b):
            pre = torch.tensor([BOS_ID])
            post = torch.tensor([FILL_ID] * fills[i] + prompts[i] + answers[i], dtype=torch.long)
            rows.append(torch.cat([emb(pre), vis[i], emb(post)]))
            labels.append([-100] * (1 + v + fills[i] + len(prompts[i])) + answers[i])
            masks.append([0] + [1] * v + [0] * len(post))
        n = max(r.shape[0] for r in rows)
        pad = emb(torch.tensor([PAD_ID]))
        x = torch.stack([torch.cat([r, pad.expand(n - r.shape[0], -1)]) for r in rows])
        att = torch.tensor([[1] * r.shape[0] + [0] * (n - r.shape[0]) for r in rows])
        return x, _pad(labels, -100)[:, :n], _pad(masks, 0)[:, :n].float(), att

    def forward(self, videos, fills, prompts, answers):
        x, labels, vmask, att = self.embed(videos, fills, prompts, answers)
        kwargs = {"visual_mask": vmask} if self.attention == "edvt" else {}
        return self.lm(inputs_embeds=x, attention_mask=att, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(self, videos, fills: list[int], prompts: list[list[int]], max_new: int = 40, output_attentions: bool = False):
        """Greedy decoding with the KV cache (one episode at a time is simplest: B = 1). Returns ids and, if asked,
        the per-step attention mass on the visual tokens (mean over layers and heads)."""
        if videos.shape[0] != 1:
            raise ValueError("generate decodes one episode at a time (B = 1)")
        previous = self.lm.config._attn_implementation
        if output_attentions:  # attention probabilities need the eager backend (SDPA does not return them)
            self.lm.config._attn_implementation = "eager"
        try:
            return self._generate(videos, fills, prompts, max_new, output_attentions)
        finally:
            self.lm.config._attn_implementation = previous

    def _generate(self, videos, fills, prompts, max_new, output_attentions):
        self.last_rows: list[torch.Tensor] = []  # per generated token: attention over the visual tokens (mean of layers, heads)
        x, _, vmask, _ = self.embed(videos, fills, prompts, [[]])
        emb = self.lm.get_input_embeddings()
        kwargs = {"visual_mask": vmask} if self.attention == "edvt" else {}
        out = self.lm(inputs_embeds=x, use_cache=True, output_attentions=output_attentions, **kwargs)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        visual = vmask[0].bool()
        ids, mass = [], []
        for _ in range(max_new):
            if output_attentions:
                att = torch.stack([a[0, :, -1] for a in out.attentions])  # (layers, heads, keys)
                on_visual = att[..., : visual.shape[0]][..., visual]  # (layers, heads, V)
                mass.append(float(on_visual.sum(-1).mean()))
                self.last_rows.append(on_visual.mean((0, 1)))
            nxt = int(out.logits[0, -1].argmax())
            ids.append(nxt)
            if nxt == EOS_ID:
                break
            kw = {"visual_mask": torch.zeros(1, 1)} if self.attention == "edvt" else {}
            out = self.lm(inputs_embeds=emb(torch.tensor([[nxt]])), cache=cache, use_cache=True,
                          output_attentions=output_attentions, **kw)
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
        return ids, mass


@dataclass
class NarratorConfig:
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    attention: str = "edvt"
    steps: int = 1500
    batch: int = 32
    lr: float = 2e-3
    segments: tuple[int, int] = (2, 4)
    max_fill: int = 24
    seed: int = 0


def narrator_batch(step: int, config: NarratorConfig):
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step + 7)
    k = int(torch.randint(config.segments[0], config.segments[1] + 1, (1,), generator=g))
    ep = make_episodes(config.batch, 20_000_000 + config.seed * 100_000 + step, (k, k), config.projector.image_size)
    fills, prompts, answers = [], [], []
    for i in range(config.batch):
        p, a = text_task(ep, i, "qa" if torch.rand(1, generator=g) < 0.5 else "narrate", g)
        fills.append(int(torch.randint(0, config.max_fill + 1, (1,), generator=g)))
        prompts.append(p)
        answers.append(a)
    return ep.videos[:, : k * FRAMES_PER_SEGMENT], fills, prompts, answers


def train_narrator(lm: LlamaForCausalLM, config: NarratorConfig, progress: bool = True, on_step=None) -> tuple[Narrator, dict]:
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    model = Narrator(lm, SequentialProjector(config.projector), config.attention)
    params = list(model.projector.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    sched = _warmup_cosine(opt, config.steps)
    t0, losses = time.time(), []
    model.projector.train()
    with torch.enable_grad():
        for step in tqdm(range(config.steps), disable=not progress, desc=f"narrator ({config.attention})"):
            videos, fills, prompts, answers = narrator_batch(step, config)
            loss = model(videos, fills, prompts, answers).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step, losses[-1])
    model.eval()
    return model, {"steps": config.steps, "wall_time_s": round(time.time() - t0, 1), "final_loss": losses[-1], "losses": losses}
