"""Chapter 09's evaluation (``python -m bytecourse eval vistallama``) and the notebook's live slice.

Per trained arm (:func:`arm_metrics`, recorded by ``train``): hallucination, fact recall and items stated against
the number of segments K = 2…12 (training saw 2–4), hallucination per narration item, frame-order questions, and
the teacher-forced attention profile from raw logits (:func:`attention_profile`). The eval turns the recorded runs
into the 2×2 (attention rule × projector) over training seeds, adds the shipped narrators' table and the rope_theta
probe, and :func:`verdicts` / :func:`analysis` read the paper's claims off them.
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


ARM_LABELS = {
    "rope": "RoPE + sequential projector",
    "edvt": "EDVT + sequential projector (Vista-LLaMA)",
    "rope_independent": "RoPE + independent projector",
    "edvt_independent": "EDVT + independent projector",
    "rope_select": "RoPE + sequential, every 3rd frame kept",
    "edvt_select": "EDVT + sequential, every 3rd frame kept",
}
THETAS = (50.0, 100.0, 200.0, 400.0, 1000.0)  # the rope_theta probe at inference (the LM was trained at 200)
THETA_SEGMENTS = (4, 8)
MIN_SEEDS = 3


def _arm_runs(runs: dict[str, dict]) -> dict[str, list[dict]]:
    """Recorded runs grouped by arm, sorted by training seed."""
    out: dict[str, list[dict]] = {}
    for name, rec in sorted(runs.items(), key=lambda kv: kv[1]["seed"]):
        out.setdefault(name.split("/")[0], []).append(rec)
    return {arm: out[arm] for arm in ARM_LABELS if arm in out}


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def tables_from_runs(runs: dict[str, dict]) -> dict:
    """The training-seed tables from the recorded arm runs (``checkpoints.recorded_runs("vistallama")``): each
    training seed contributes its mean over the evaluation seeds, and rows summarise over training seeds."""
    from ..evaluation import summarise

    arms = _arm_runs(runs)
    arm_rows, length_rows, position_rows, profiles = [], [], [], {}
    for arm, recs in arms.items():
        ms = [r["metrics"] for r in recs]
        seeds_ = [r["seed"] for r in recs]
        keys = ("hallucination_within", "hallucination_beyond", "order_accuracy")
        arm_rows.append(
            {
                "setting": arm,
                "label": ARM_LABELS[arm],
                "seeds": seeds_,
                "metrics": summarise([{k: m[k] for k in keys} for m in ms]),
            }
        )
        for k in ms[0]["by_k"]:
            per_seed = [{q: _mean(m["by_k"][k][q]) for q in ("hallucination", "fact_recall", "items")} for m in ms]
            length_rows.append(
                {"setting": f"{arm}, K={k}", "arm": arm, "K": int(k), "seeds": seeds_, "metrics": summarise(per_seed)}
            )
        # per narration item: false ÷ stated, pooled over the evaluation seeds and over K within / beyond training
        for regime, inside in (("K ≤ 4", True), ("K > 4", False)):
            ks = [k for k in ms[0]["positions"] if (int(k) <= TRAINING_SEGMENTS[1]) == inside]
            items = sorted({int(i) for m in ms for k in ks for i in m["positions"].get(k, {})})
            for item in items:
                per_seed = []
                for m in ms:
                    pairs = [m["positions"][k][str(item)] for k in ks if str(item) in m["positions"].get(k, {})]
                    stated = sum(p[1] for p in pairs)
                    per_seed.append(
                        {
                            "hallucination": sum(p[0] for p in pairs) / stated if stated else float("nan"),
                            "stated": stated,
                        }
                    )
                if all(p["stated"] >= 8 for p in per_seed):
                    position_rows.append(
                        {
                            "setting": f"{arm}, item {item + 1}, {regime}",
                            "arm": arm,
                            "item": item,
                            "within_training": inside,
                            "seeds": seeds_,
                            "metrics": summarise(per_seed),
                        }
                    )
        n = min(len(m["attention"]["mass"]) for m in ms)
        profiles[arm] = {q: [_mean(m["attention"][q][j] for m in ms) for j in range(n)] for q in ms[0]["attention"]}
    return {
        "arms": {
            "rows": arm_rows,
            "setting_name": "narrator",
            "seed_kind": "training",
            "unit": "training seeds (each: mean of 3 eval seeds)",
        },
        "length": {
            "rows": length_rows,
            "setting_name": "narrator, segments K (training saw 2–4)",
            "seed_kind": "training",
        },
        "positions": {
            "rows": position_rows,
            "setting_name": "narrator, narration item, K pooled within / beyond the training range",
            "seed_kind": "training",
        },
        "attention_profile": {
            "per_arm": profiles,
            "segments": 8,
            "fill": 64,
            "how": "teacher-forced on the true narration (K = 8, 64 fillers); per narration position, mean over "
            "layers, heads, episodes and training seeds: softmax mass on visual keys, mean raw logit on visual and "
            "on text keys, number of text keys",
        },
    }


@torch.no_grad()
def theta_probe(narrators: dict, eval_seeds: Sequence[int], thetas=THETAS, ks=THETA_SEGMENTS) -> dict:
    """The shipped seed-0 RoPE and EDVT narrators with the LM's RoPE base changed at inference (no retraining): a
    smaller base makes RoPE decay faster with distance. EDVT keeps RoPE between text tokens, so the base moves it
    too — but not its visual logits."""
    from ..evaluation import summarise

    rows = []
    for name in ("rope", "edvt"):
        nar = narrators[name]
        for theta in thetas:
            with rope_theta(nar.lm, theta):
                for k in ks:
                    per_seed = [
                        {q: r[q] for q in ("hallucination", "fact_recall")}
                        for r in (narrate_and_check(nar, s, k) for s in eval_seeds)
                    ]
                    rows.append(
                        {
                            "setting": f"{name}, θ={theta:g}, K={k}",
                            "arm": name,
                            "theta": theta,
                            "K": k,
                            "metrics": summarise(per_seed),
                        }
                    )
    return {
        "rows": rows,
        "setting_name": "narrator, rope_theta at inference (trained at 200), K",
        "seeds": list(eval_seeds),
    }


def evaluate_vistallama(
    eval_seeds: Sequence[int] = EVAL_SEEDS, runs: dict | None = None, progress: bool = True
) -> dict:
    """``eval vistallama``: the shipped seed-0 narrators' hallucination table by K (what the notebook's live slice
    recomputes), the training-seed tables from the recorded arm runs (only those trained on the shipped LM;
    ``runs_used`` lists them), and the rope_theta probe."""
    from tqdm.auto import tqdm

    from .. import checkpoints
    from ..evaluation import summarise

    runs = checkpoints.recorded_runs("vistallama") if runs is None else runs
    lm_sha = checkpoints.manifest_entry("vistallama_lm")["sha256"]
    runs = {k: v for k, v in runs.items() if v.get("lm_sha256") == lm_sha}  # only arms trained on the shipped LM
    narrators = load_narrators()
    t0 = time.time()
    rows = []
    for name, nar in tqdm(narrators.items(), disable=not progress, desc="shipped narrators"):
        for k in KS:
            per_seed = [
                {q: r[q] for q in ("hallucination", "fact_recall")}
                for r in (narrate_and_check(nar, s, k) for s in eval_seeds)
            ]
            rows.append({"setting": f"{name}, K={k}", "variant": name, "K": k, "metrics": summarise(per_seed)})
    out = {
        "hallucination": {
            "rows": rows,
            "seeds": list(eval_seeds),
            "samples_per_seed": 16,
            "setting_name": "narrator (shipped, training seed 0), segments K (training saw 2–4)",
        },
        **tables_from_runs(runs),
        "rope_theta": theta_probe(narrators, eval_seeds),
    }
    out["runs_used"] = sorted(runs)
    out["wall_time_s"] = round(time.time() - t0, 1)
    return out


def cli_eval(args) -> dict:
    return evaluate_vistallama(list(args.seeds))


def _row(tables: dict, table: str, setting: str) -> dict | None:
    return next((r for r in tables.get(table, {}).get("rows", []) if r["setting"] == setting), None)


def _fmt(s: dict) -> str:
    return f"{s['mean']:.3f} [{s['min']:.3f}–{s['max']:.3f}]"


def compare_arms(
    tables: dict, claim: str, pairs: Sequence[tuple[str, str]], metric: str, higher_is_better: bool
) -> dict:
    """A three-outcome verdict over training seeds: every (a, b) pair of arms must put ``a`` on the good side of
    ``b`` on ``metric`` (disjoint seed ranges, :func:`bytecourse.evaluation.seed_range_side`)."""
    from ..evaluation import outcome_of, seed_range_side

    parts, sides, n = [], [], []
    for a, b in pairs:
        ra, rb = _row(tables, "arms", a), _row(tables, "arms", b)
        if ra is None or rb is None:
            return {
                "claim": claim,
                "outcome": "inconclusive",
                "sentence": f"{a} or {b} not trained yet → **inconclusive**.",
            }
        sa, sb = ra["metrics"][metric], rb["metrics"][metric]
        sides.append(seed_range_side(sa, sb, higher_is_better))
        n += [len(ra["seeds"]), len(rb["seeds"])]
        parts.append(f"{a} {_fmt(sa)} vs {b} {_fmt(sb)}")
    outcome = outcome_of(sides, min(n), MIN_SEEDS)
    return {"claim": claim, "outcome": outcome, "sentence": f"{metric}: " + "; ".join(parts) + f" → **{outcome}**."}


def verdicts(tables: dict) -> list[dict]:
    """The paper's claims, each against the training-seed spread of the 2×2 arms."""
    beyond, order = "hallucination_beyond", "order_accuracy"
    return [
        compare_arms(
            tables,
            "EDVT lowers hallucination beyond the training length (K = 6–12), with the paper's sequential projector",
            [("edvt", "rope")],
            beyond,
            higher_is_better=False,
        ),
        compare_arms(
            tables,
            "…and with the independent projector too (the effect belongs to the attention rule)",
            [("edvt_independent", "rope_independent")],
            beyond,
            higher_is_better=False,
        ),
        compare_arms(
            tables,
            "the sequential projector supplies frame order under EDVT (order questions, K = 3)",
            [("edvt", "edvt_independent")],
            order,
            higher_is_better=True,
        ),
    ]


def analysis(tables: dict) -> list[str]:
    """Computed reading notes for the notebook: where hallucination sits within and beyond the training range, what
    the raw logits say about the attention decay, the 2×2 attribution, frame selection and the rope_theta probe."""
    lines = []
    arms = {r["setting"]: r for r in tables.get("arms", {}).get("rows", [])}
    if "rope" in arms and "edvt" in arms:
        w = {a: arms[a]["metrics"]["hallucination_within"]["mean"] for a in arms}
        b = {a: arms[a]["metrics"]["hallucination_beyond"]["mean"] for a in arms}
        lines.append(
            f"Within the training range (K = 2–4) hallucination is RoPE {w['rope']:.3f} vs EDVT {w['edvt']:.3f}; "
            f"beyond it (K = 6–12) RoPE {b['rope']:.3f} vs EDVT {b['edvt']:.3f} "
            f"(growth ×{b['rope'] / max(w['rope'], 1e-9):.2f} vs ×{b['edvt'] / max(w['edvt'], 1e-9):.2f})."
        )
        if "rope_independent" in arms and "edvt_independent" in arms:
            att_seq = b["rope"] - b["edvt"]
            att_ind = b["rope_independent"] - b["edvt_independent"]
            proj_edvt = b["edvt_independent"] - b["edvt"]
            proj_rope = b["rope_independent"] - b["rope"]
            lines.append(
                f"2×2 attribution beyond the training range (positive = the paper's choice hallucinates less): "
                f"EDVT over RoPE {att_seq:+.3f} with the sequential projector, {att_ind:+.3f} with the independent "
                f"one; "
                f"sequential over independent {proj_edvt:+.3f} under EDVT, {proj_rope:+.3f} under RoPE."
            )
    first = {
        (r["arm"], r["within_training"]): r["metrics"]["hallucination"]["mean"]
        for r in tables.get("positions", {}).get("rows", [])
        if r["item"] == 0
    }
    if all((a, w) in first for a in ("rope", "edvt") for w in (True, False)):
        lines.append(
            f"The first item of a narration, before any length has built up: hallucination RoPE "
            f"{first[('rope', True)]:.3f} → {first[('rope', False)]:.3f}, EDVT {first[('edvt', True)]:.3f} → "
            f"{first[('edvt', False)]:.3f} from K ≤ 4 to K > 4. The video's length alone moves it: more visual tokens "
            f"in every softmax, a longer recurrence in the projector, and under RoPE text–video distances that "
            f"training never reached."
        )
    length = {(r["arm"], r["K"]): r["metrics"] for r in tables.get("length", {}).get("rows", [])}
    if length:
        k = max(kk for _, kk in length)
        said = ", ".join(
            f"{arm} {m['items']['mean']:.1f} items (fact recall {m['fact_recall']['mean']:.3f})"
            for arm in arms
            if (m := length.get((arm, k))) is not None
        )
        lines.append(
            f"At K = {k} segments the narrations hold {said}; training narrations held at most "
            f"{TRAINING_SEGMENTS[1]} items."
        )
    prof = tables.get("attention_profile", {}).get("per_arm", {})
    for arm in ("rope", "edvt"):
        if arm in prof:
            p = prof[arm]
            q = max(1, len(p["mass"]) // 4)
            first, last = (lambda c, q=q: _mean(c[:q])), (lambda c, q=q: _mean(c[-q:]))
            lines.append(
                f"{arm}: along the teacher-forced narration (first → last quarter) the visual mass goes "
                f"{first(p['mass']):.3f} → {last(p['mass']):.3f}, the mean raw logit on visual keys "
                f"{first(p['visual_logit']):+.3f} → {last(p['visual_logit']):+.3f}, on text keys "
                f"{first(p['text_logit']):+.3f} → {last(p['text_logit']):+.3f}, while the text keys grow "
                f"{first(p['text_keys']):.0f} → {last(p['text_keys']):.0f}."
            )
    for arm in ("rope_select", "edvt_select"):
        base = arm.split("_")[0]
        if arm in arms and base in arms:
            s, e = arms[arm]["metrics"], arms[base]["metrics"]
            lines.append(
                f"Frame selection ({arm}, training seeds {arms[arm]['seeds']}): hallucination within / beyond "
                f"{s['hallucination_within']['mean']:.3f} / {s['hallucination_beyond']['mean']:.3f}, order "
                f"{s['order_accuracy']['mean']:.3f}, against every frame kept "
                f"{e['hallucination_within']['mean']:.3f} / "
                f"{e['hallucination_beyond']['mean']:.3f}, {e['order_accuracy']['mean']:.3f}."
            )
    theta = tables.get("rope_theta", {}).get("rows", [])
    if theta:
        k = max(r["K"] for r in theta)
        by = {(r["arm"], r["theta"]): r["metrics"]["hallucination"]["mean"] for r in theta if r["K"] == k}
        for arm in ("rope", "edvt"):
            ts = sorted(t for a, t in by if a == arm)
            lines.append(
                f"rope_theta at inference, {arm}, K = {k}: "
                + ", ".join(f"θ {t:g} → {by[(arm, t)]:.3f}" for t in ts)
                + " (trained at 200)."
            )
    return lines


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
