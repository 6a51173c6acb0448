"""Chapter 09's evaluation: hallucination against the number of segments, frame-order questions and the
attention mass on visual tokens (``python -m bytecourse eval vistallama``), and the notebook's live slice.
"""

from __future__ import annotations

import time

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
from .narrator import Narrator
from .train import load_narrators


@torch.no_grad()
def narrate_and_check(
    narrator: Narrator, seed: int, segments: int, n: int = 16, fill: int = 8, with_attention: bool = False
) -> dict:
    """Narrate n episodes of K = ``segments``; per generated item k: fact accuracy; overall hallucination rate;
    optionally the attention mass on visual tokens per generated position."""
    ep = make_episodes(n, seeds.VISTALLAMA_EVAL + 1000 * seed + segments, (segments, segments))
    halluc, recall, per_item, masses = [], [], {}, []
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
        for f in facts:
            per_item.setdefault(f.item, []).append(f.true)
        masses.append(mass)
    return {
        "hallucination": sum(halluc) / n,
        "fact_recall": sum(recall) / n,
        "item_accuracy": {k: sum(v) / len(v) for k, v in sorted(per_item.items())},
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
def attention_mass_forced(
    narrator: Narrator, seeds: list[int], segments: int = 6, fill: int = 64, n: int = 8
) -> list[float]:
    """Attention mass on the visual tokens at each narration position, with the *true* narration fed in (teacher
    forcing), so both attention rules are measured on the same tokens whatever they would have generated."""
    previous = narrator.lm.config._attn_implementation
    narrator.lm.config._attn_implementation = "eager"  # attention probabilities
    try:
        sums: list[float] = []
        counts: list[int] = []
        for seed in seeds:
            ep = make_episodes(n, seeds.VISTALLAMA_EVAL + 700_000 + 1000 * seed, (segments, segments))
            for i in range(n):
                answer = encode_words(ep.narrations[i].split())
                x, _, vmask, _ = narrator.embed(
                    ep.videos[i : i + 1, : segments * FRAMES_PER_SEGMENT],
                    [fill],
                    [encode_words(["describe"])],
                    [answer],
                )
                kwargs = {"visual_mask": vmask} if narrator.attention == "edvt" else {}
                out = narrator.lm(inputs_embeds=x, output_attentions=True, **kwargs)
                att = torch.stack([a[0] for a in out.attentions])  # (layers, heads, S, S)
                visual = vmask[0].bool()
                start = x.shape[1] - len(answer) - 1  # the query that predicts the first narration word
                per_pos = att[:, :, start:, :][..., visual].sum(-1).mean((0, 1))
                for j, v in enumerate(per_pos.tolist()):
                    if j == len(sums):
                        sums.append(0.0)
                        counts.append(0)
                    sums[j] += v
                    counts[j] += 1
        return [s / c for s, c in zip(sums, counts) if c >= len(seeds) * n // 2]
    finally:
        narrator.lm.config._attn_implementation = previous


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
    mass = {name: attention_mass_forced(narrators[name], seeds) for name in ("rope", "edvt")}
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
