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

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .. import seeds
from .attention import enable_edvt
from .data import (
    BOS_ID,
    EOS_ID,
    FILL_ID,
    FRAMES_PER_SEGMENT,
    PAD_ID,
    VOCAB,
    encode_words,
    make_episodes,
    order_question,
)
from .projector import ProjectorConfig, SequentialProjector


@dataclass
class LMConfig:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    rope_theta: float = 200.0
    max_positions: int = 512

    def llama(self) -> LlamaConfig:
        config = LlamaConfig(
            vocab_size=len(VOCAB),
            hidden_size=self.hidden,
            intermediate_size=2 * self.hidden,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.heads,
            rope_theta=self.rope_theta,
            max_position_embeddings=self.max_positions,
            pad_token_id=PAD_ID,
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
            tie_word_embeddings=True,
        )
        config._attn_implementation = "sdpa"
        return config


def build_lm(config: LMConfig = LMConfig(), seed: int = 0) -> LlamaForCausalLM:
    """The tiny Llama with EDVT attention installed, its weights drawn from ``seed`` (global RNG untouched)."""
    from ..trainer import seeded_init

    return enable_edvt(seeded_init(seed, lambda: LlamaForCausalLM(config.llama())))


def _train(
    model,
    loss_fn,
    config,
    *,
    name: str,
    weight_decay: float,
    losses: list[float],
    on_step=None,
    run_dir: Path | None = None,
    device: str = "cpu",
    checkpoint: str | None = None,
    **run,
):
    """Both stages' shared loop: AdamW, linear warm-up over the first 10 % of steps, cosine decay to 0, gradient
    clipping at 1, no EMA (the raw weights ship) — through the course's trainer (resumable, ``--device``,
    ``--max-minutes``). ``run``: the trainer's other options (``resume``, ``max_minutes``, ``progress``,
    ``state_dict``); ``losses`` collects the per-step loss."""
    import tempfile

    from ..trainer import train_and_ship

    def record(step: int, loss: float) -> None:
        losses.append(loss)
        if on_step is not None:
            on_step(step - 1, loss)

    schedule = {"warmup": max(1, config.steps // 10), "final_lr_ratio": 0.0, "weight_decay": weight_decay}
    with tempfile.TemporaryDirectory() as tmp:
        return train_and_ship(
            model,
            loss_fn,
            target="vistallama",
            checkpoint=checkpoint,
            config=json_config(config),
            total_steps=config.steps,
            lr=config.lr,
            run_dir=run_dir or Path(tmp) / name,
            seed=config.seed,
            ship=checkpoint is not None,
            ship_ema=False,
            device=device,
            on_step=record,
            **schedule,
            **run,
        )


def json_config(config) -> dict:
    """A stage config as the manifest and the resume check store it (nested configs as dicts)."""
    d = asdict(config)
    if isinstance(config, NarratorConfig):
        d["projector"] = config.projector.to_dict()
    return json.loads(json.dumps(d))


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
    g = torch.Generator().manual_seed(config.seed * seeds.TRAIN_SEED_STRIDE + step)
    ep = make_episodes(config.batch, seeds.VISTALLAMA_LM + config.seed * 100_000 + step, config.segments)
    seqs, labels = [], []
    for i in range(config.batch):
        prompt, answer = text_task(ep, i, "qa" if torch.rand(1, generator=g) < 0.5 else "narrate", g)
        fill = int(torch.randint(0, config.max_fill + 1, (1,), generator=g))
        prefix = text_prefix(ep, i, config.visual_slots)
        s = [BOS_ID] + prefix + [FILL_ID] * fill + prompt + answer
        seqs.append(s)
        labels.append([-100] * (1 + len(prefix) + fill) + prompt + answer)
    return _pad(seqs, PAD_ID), _pad(labels, -100)


def pretrain_lm(config: PretrainConfig = PretrainConfig(), **run) -> tuple[LlamaForCausalLM, dict]:
    """Stage 1: next-token pretraining of the LM on text-only narrations (:func:`lm_batch`). ``run``: the trainer's
    options (``checkpoint``: ship the weights under that name when the schedule completes; ``run_dir``, ``resume``,
    ``max_minutes``, ``device``, ``progress``, ``on_step``). Returns the LM (frozen, eval mode) and a summary with the
    per-step ``losses``."""
    lm = build_lm(config.lm, config.seed)
    losses: list[float] = []

    def loss_fn(model, step: int, dev: torch.device) -> torch.Tensor:
        ids, labels = lm_batch(step, config)
        return model(input_ids=ids.to(dev), labels=labels.to(dev)).loss

    lm, summary = _train(lm, loss_fn, config, name="lm", weight_decay=0.0, losses=losses, **run)
    lm.eval().requires_grad_(False)
    return lm, summary | {"steps": config.steps, "losses": losses, "config": asdict(config)}


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
        dev = vis.device
        rows, labels, masks = [], [], []
        for i in range(b):
            pre = torch.tensor([BOS_ID], device=dev)
            post = torch.tensor([FILL_ID] * fills[i] + prompts[i] + answers[i], dtype=torch.long, device=dev)
            rows.append(torch.cat([emb(pre), vis[i], emb(post)]))
            labels.append([-100] * (1 + v + fills[i] + len(prompts[i])) + answers[i])
            masks.append([0] + [1] * v + [0] * len(post))
        n = max(r.shape[0] for r in rows)
        pad = emb(torch.tensor([PAD_ID], device=dev))
        x = torch.stack([torch.cat([r, pad.expand(n - r.shape[0], -1)]) for r in rows])
        att = torch.tensor([[1] * r.shape[0] + [0] * (n - r.shape[0]) for r in rows], device=dev)
        return x, _pad(labels, -100)[:, :n].to(dev), _pad(masks, 0)[:, :n].float().to(dev), att

    def forward(self, videos, fills, prompts, answers):
        x, labels, vmask, att = self.embed(videos, fills, prompts, answers)
        kwargs = {"visual_mask": vmask} if self.attention == "edvt" else {}
        return self.lm(inputs_embeds=x, attention_mask=att, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(
        self, videos, fills: list[int], prompts: list[list[int]], max_new: int = 40, output_attentions: bool = False
    ):
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
        self.last_rows: list[
            torch.Tensor
        ] = []  # per generated token: attention over the visual tokens (mean of layers, heads)
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
            kw = {"visual_mask": torch.zeros(1, 1, device=x.device)} if self.attention == "edvt" else {}
            out = self.lm(
                inputs_embeds=emb(torch.tensor([[nxt]], device=x.device)),
                cache=cache,
                use_cache=True,
                output_attentions=output_attentions,
                **kw,
            )
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
    g = torch.Generator().manual_seed(config.seed * seeds.TRAIN_SEED_STRIDE + step + 7)
    k = int(torch.randint(config.segments[0], config.segments[1] + 1, (1,), generator=g))
    ep = make_episodes(
        config.batch, seeds.VISTALLAMA_NARRATOR + config.seed * 100_000 + step, (k, k), config.projector.image_size
    )
    fills, prompts, answers = [], [], []
    for i in range(config.batch):
        p, a = text_task(ep, i, "qa" if torch.rand(1, generator=g) < 0.5 else "narrate", g)
        fills.append(int(torch.randint(0, config.max_fill + 1, (1,), generator=g)))
        prompts.append(p)
        answers.append(a)
    return ep.videos[:, : k * FRAMES_PER_SEGMENT], fills, prompts, answers


def train_narrator(lm: LlamaForCausalLM, config: NarratorConfig, **run) -> tuple[Narrator, dict]:
    """Stage 2: the projector trained on narrated episodes with the LM frozen (LLaVA-style). ``run`` as in
    :func:`pretrain_lm` (``checkpoint``: ship the projector's weights under that name)."""
    from ..trainer import seeded_init

    model = Narrator(lm, seeded_init(config.seed, lambda: SequentialProjector(config.projector)), config.attention)
    losses: list[float] = []

    def loss_fn(narrator, step: int, dev: torch.device) -> torch.Tensor:
        videos, fills, prompts, answers = narrator_batch(step, config)
        return narrator(videos.to(dev), fills, prompts, answers).loss

    projector = {"state_dict": lambda m: m.projector.state_dict()}
    model, summary = _train(
        model,
        loss_fn,
        config,
        name=f"narrator_{config.attention}",
        weight_decay=0.01,
        losses=losses,
        **projector,
        **run,
    )
    model.eval()
    return model, summary | {"steps": config.steps, "losses": losses}
