"""Chapter 09's evaluation: hallucination against the number of segments, frame-order questions and the
attention mass on visual tokens (``python -m bytecourse eval vistallama``), and the notebook's live slice.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import torch

from .. import seeds
from .data import (
    FRAMES_PER_SEGMENT,
    check_narration,
    decode_ids,
    encode_words,
    hallucination_rate,
    make_episodes,
    order_question,
)
from .narrator import Narrator, NarratorConfig
from .train import load_narrators

KS = (2, 4, 6, 8, 10, 12)  # segments per episode; training saw 2–4
TRAINING_SEGMENTS = NarratorConfig.segments
EVAL_SEEDS = (0, 1, 2)


@torch.no_grad()
def narrate_and_check(
    narrator: Narrator, seed: int, segments: int, n: int = 16, fill: int = 8, with_attention: bool = False
) -> dict:
    """Narrate n episodes of K = ``segments``; overall hallucination rate (mean over episodes of false ÷ stated
    facts) and fact recall; per narration item k (its place in the order) the accuracy of the facts stated there and
    the pooled ``item_false`` / ``item_stated`` counts (the per-position hallucination); optionally the attention
    mass on visual tokens per generated position."""
    ep = make_episodes(n, seeds.VISTALLAMA_EVAL + 1000 * seed + segments, (segments, segments))
    halluc, recall, per_item, masses, items = [], [], {}, [], []
    for i in range(n):
        ids, mass = narrator.generate(
            ep.videos[i : i + 1, : segments * FRAMES_PER_SEGMENT],
            [fill],
            [encode_words(["describe"])],
            max_new=8 * segments + 8,
            output_attentions=with_attention,
        )
        facts = check_narration(decode_ids(ids), ep, i)
        halluc.append(hallucination_rate(facts))
        recall.append(sum(f.true for f in facts) / (2 * segments))
        items.append(1 + max((f.item for f in facts), default=-1))
        for f in facts:
            per_item.setdefault(f.item, []).append(f.true)
        masses.append(mass)
    return {
        "hallucination": sum(halluc) / n,
        "fact_recall": sum(recall) / n,
        "items": sum(items) / n,
        "item_accuracy": {k: sum(v) / len(v) for k, v in sorted(per_item.items())},
        "item_false": {k: len(v) - sum(v) for k, v in sorted(per_item.items())},
        "item_stated": {k: len(v) for k, v in sorted(per_item.items())},
        "attention_mass": masses,
    }


@torch.no_grad()
def order_accuracy(narrator: Narrator, seed: int, segments: int = 3, n: int = 32, fill: int = 8) -> float:
    ep = make_episodes(n, seeds.VISTALLAMA_EVAL + 500_000 + 1000 * seed + segments, (segments, segments))
    g = torch.Generator().manual_seed(seed)
    right, asked = 0, 0
    for i in range(n):
        qa = order_question(ep, i, g)
        if qa is None:
            continue
        ids, _ = narrator.generate(
            ep.videos[i : i + 1, : segments * FRAMES_PER_SEGMENT], [fill], [encode_words(qa[0].split())], max_new=5
        )
        right += decode_ids(ids) == qa[1]
        asked += 1
    return right / max(1, asked)


@torch.no_grad()
def attention_profile(
    narrator: Narrator, eval_seeds: Sequence[int] = EVAL_SEEDS, segments: int = 8, fill: int = 64, n: int = 8
) -> dict[str, list[float]]:
    """How the narration's queries treat the visual keys, position by position, with the *true* narration fed in
    (teacher forcing, so every narrator is measured on the same tokens whatever it would have generated).

    Per narration position j, from each layer's **pre-softmax logits** s_ji (:func:`.attention.edvt_logits`: EDVT's
    rule for the EDVT narrators, RoPE's for the others), mean over layers, heads and episodes:

    - ``mass``: the softmax mass on the visual keys, σ(lse_v − lse_t) with lse_v = log Σ_{i visual} e^{s_ji} and
      lse_t the same over the text keys i ≤ j;
    - ``visual_logit`` / ``text_logit``: the mean raw logit over the visual / the text keys.

    The mass can fall for two reasons: the visual logits fall (what RoPE's long-term decay does, and what EDVT
    removes) or more text keys join the softmax (which happens under either rule). ``visual_logit`` separates them;
    ``text_keys`` is how many text keys position j sees."""
    from .attention import edvt_logits

    captured: list[tuple] = []

    def grab(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        captured.append((module, hidden, kwargs.get("position_embeddings")))

    layers = [layer.self_attn for layer in narrator.lm.model.layers]
    handles = [m.register_forward_pre_hook(grab, with_kwargs=True) for m in layers]
    keys = ("mass", "visual_logit", "text_logit", "text_keys")
    sums: dict[str, list[float]] = {k: [] for k in keys}
    counts: list[int] = []
    try:
        for seed in eval_seeds:
            ep = make_episodes(n, seeds.VISTALLAMA_EVAL + 700_000 + 1000 * seed, (segments, segments))
            for i in range(n):
                answer = encode_words(ep.narrations[i].split())
                video = ep.videos[i : i + 1, : segments * FRAMES_PER_SEGMENT]
                x, _, vmask, _ = narrator.embed(video, [fill], [encode_words(["describe"])], [answer])
                captured.clear()
                kwargs = {"visual_mask": vmask} if narrator.attention == "edvt" else {}
                narrator.lm.model(inputs_embeds=x, **kwargs)
                mask = vmask if narrator.attention == "edvt" else None
                logits = torch.stack([edvt_logits(m, h, pe, mask)[0] for m, h, pe in captured])  # (L, heads, S, S)
                visual = vmask[0].bool()
                start = x.shape[1] - len(answer) - 1  # the query that predicts the first narration word
                for j in range(start, x.shape[1]):
                    row = logits[:, :, j, : j + 1]
                    vis, txt = row[..., visual[: j + 1]], row[..., ~visual[: j + 1]]
                    lse_v, lse_t = vis.logsumexp(-1), txt.logsumexp(-1)
                    vals = {
                        "mass": float(torch.sigmoid(lse_v - lse_t).mean()),
                        "visual_logit": float(vis.mean()),
                        "text_logit": float(txt.mean()),
                        "text_keys": float(txt.shape[-1]),
                    }
                    pos = j - start
                    if pos == len(counts):
                        counts.append(0)
                        for k in keys:
                            sums[k].append(0.0)
                    counts[pos] += 1
                    for k in keys:
                        sums[k][pos] += vals[k]
    finally:
        for h in handles:
            h.remove()
    full = len(eval_seeds) * n // 2  # positions most episodes reach
    return {k: [v / c for v, c in zip(sums[k], counts) if c >= full] for k in keys}


@contextlib.contextmanager
def rope_theta(lm, theta: float):
    """Run the narrator's LM with RoPE base ``theta`` instead of the one it was trained with (an inference-time probe
    of the length effect: a smaller base decays faster with distance). Restores the trained base on exit."""
    if not theta > 0:
        raise ValueError(f"rope_theta must be > 0, got {theta}")
    rot = lm.model.rotary_emb
    saved = rot.inv_freq.clone()
    dim = saved.shape[0] * 2
    rot.inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=saved.device) / dim))
    try:
        yield lm
    finally:
        rot.inv_freq = saved


def arm_metrics(narrator: Narrator, eval_seeds: Sequence[int] = EVAL_SEEDS, ks: Sequence[int] = KS, n: int = 16):
    """Everything the tables need from one trained narrator (recorded with its run): per K and evaluation seed the
    hallucination rate, fact recall and items stated; per K the per-position false / stated counts pooled over the
    evaluation seeds; frame-order accuracy per evaluation seed; the teacher-forced attention profile; and two
    summaries — hallucination within the training range of K (2–4) and beyond it (6–12), each a mean over K and
    evaluation seeds."""
    by_k, positions = {}, {}
    for k in ks:
        runs = [narrate_and_check(narrator, s, k, n=n) for s in eval_seeds]
        by_k[str(k)] = {m: [r[m] for r in runs] for m in ("hallucination", "fact_recall", "items")}
        false, stated = {}, {}
        for r in runs:
            for item, c in r["item_false"].items():
                false[item] = false.get(item, 0) + c
                stated[item] = stated.get(item, 0) + r["item_stated"][item]
        positions[str(k)] = {str(item): [false[item], stated[item]] for item in sorted(stated)}
    within = [h for k in ks if k <= TRAINING_SEGMENTS[1] for h in by_k[str(k)]["hallucination"]]
    beyond = [h for k in ks if k > TRAINING_SEGMENTS[1] + 1 for h in by_k[str(k)]["hallucination"]]
    return {
        "hallucination_within": sum(within) / len(within),
        "hallucination_beyond": sum(beyond) / len(beyond),
        "order_accuracy": sum(order_accuracy(narrator, s) for s in eval_seeds) / len(eval_seeds),
        "by_k": by_k,
        "positions": positions,
        "attention": attention_profile(narrator, eval_seeds),
        "eval_seeds": list(eval_seeds),
        "episodes_per_seed": n,
    }


def evaluate_vistallama(seeds: list[int], progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from ..evaluation import summarise

    narrators = load_narrators()
    t0 = time.time()
    halluc_rows, order_rows = [], []
    for name, nar in narrators.items():
        for k in (2, 4, 6):
            per_seed = []
            for s in tqdm(seeds, disable=not progress):
                r = narrate_and_check(nar, s, k)
                per_seed.append({"hallucination": r["hallucination"], "fact_recall": r["fact_recall"]})
            halluc_rows.append({"setting": f"{name}, K={k}", "variant": name, "K": k, "metrics": summarise(per_seed)})
        order_rows.append(
            {"setting": name, "metrics": summarise([{"order_accuracy": order_accuracy(nar, s)} for s in seeds])}
        )
    mass = {name: attention_profile(narrators[name], seeds)["mass"] for name in ("rope", "edvt")}
    return {
        "hallucination": {
            "rows": halluc_rows,
            "seeds": list(seeds),
            "samples_per_seed": 16,
            "setting_name": "narrator, segments (K; training saw 2–4)",
        },
        "order": {"rows": order_rows, "seeds": list(seeds), "samples_per_seed": 32, "setting_name": "narrator"},
        "attention_mass": {
            "per_position": mass,
            "fill": 64,
            "segments": 6,
            "episodes_per_seed": 8,
            "how": "teacher-forced on the true narration; mass = attention on visual keys, mean over layers, heads, "
            "episodes",
        },
        "wall_time_s": round(time.time() - t0, 1),
    }


def cli_eval(args) -> dict:
    return evaluate_vistallama(list(args.seeds))


SLICE_TOLERANCE = 0.02  # greedy decoding, same weights and seed: only float rounding can change a token
SLICE_ROWS = ("rope", "edvt")


def live_slice(narrators: dict, rows: tuple[str, ...] = SLICE_ROWS, segments: int = 4) -> dict:
    """Evaluation seed 0 of the hallucination table for ``rows`` at K = ``segments``, recomputed."""
    from ..evaluation import summarise

    live = []
    for name in rows:
        r = narrate_and_check(narrators[name], 0, segments)
        live.append(
            {"setting": f"{name}, K={segments}", "metrics": summarise([{"hallucination": r["hallucination"]}])}
        )
    return {"hallucination": {"rows": live, "setting_name": "narrator, segments"}}
