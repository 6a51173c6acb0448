"""PixelLM's evaluation as MUSE's (``validate`` and ``utils/matcher.py`` of the released code): the model writes an
answer, every complete codebook group in it becomes a mask, and predicted masks are matched to the ground truth.

- **Matching**: the Hungarian algorithm (:func:`hungarian`, written out here: no SciPy) on the cost sigmoid-CE +
  Dice between every predicted mask's logits and every true mask (on all 4,096 pixels; the code samples 12,544
  points of its larger masks). Unmatched truths are scored against an empty prediction (IoU 0), and unmatched
  predictions count IoU 0 too — even an empty one: MUSE's empty-vs-empty = 1 would pay a model for writing spare
  groups whose masks come out empty (an untrained one spamming ``[SEG0]`` scored gIoU 0.98 that way).
- **gIoU**: the mean of the per-mask IoUs (an empty-vs-empty pair counts 1); **cIoU**: ΣI / ΣU over the masks.
  Both by split (``few`` / ``many`` / ``touching``) and bucketed by the number of targets (1, 2, 3, 4+).
- **Overlap rate**: of the foreground pixels the predicted masks claim, the share claimed by ≥ 2 of a question's
  masks (what the target refinement loss is meant to lower).
- **Teacher-forced gIoU**: the masks decoded from the *true* answer, in order — what the decoder can do when the
  language model writes the right targets (a diagnostic; the paper reports only the generated answers' numbers).
- **Text**: an answer names its targets when the (colour, kind) it describes are the true targets' (as multisets)
  and it writes one complete group per description.
- **FLOPs per answer** (``torch.utils.flop_counter.FlopCounterMode``): image encoder(s), the language model over the
  whole answer, and the decoder, for one question; the decoder's share of them.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import evaluation, seeds
from ..evaluation import outcome_of, seed_range_side, summarise
from .data import (
    SPLITS,
    TEMPLATES,
    MuseBatch,
    detokenize,
    held_out,
    parse_answer,
    parse_question,
    prompt_ids,
    tokenize,
)
from .models import LMConfig, PixelLM, check_image_batch

EVAL_QUESTIONS = 96  # per split and evaluation seed
BUCKETS = ("1", "2", "3", "4+")


def bucket_of(n: int) -> str:
    return str(n) if n < 4 else "4+"


def hungarian(cost: torch.Tensor) -> list[tuple[int, int]]:
    """Minimum-cost assignment of a ``(rows, cols)`` cost matrix (Kuhn–Munkres with potentials, O(n³)); returns
    ``min(rows, cols)`` pairs ``(row, col)``. A rectangular matrix is padded with zeros to square: padding costs the
    same for every choice, so it changes no optimal pairing among the real rows and columns."""
    if cost.dim() != 2:
        raise ValueError(f"cost must be a matrix, got shape {tuple(cost.shape)}")
    r, c = cost.shape
    n = max(r, c)
    if n == 0:
        return []
    a = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    a[1 : r + 1, 1 : c + 1] = cost.detach().double().cpu()
    a = a.tolist()
    inf = float("inf")
    u, v, p, way = [0.0] * (n + 1), [0.0] * (n + 1), [0] * (n + 1), [0] * (n + 1)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv, used = [inf] * (n + 1), [False] * (n + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], inf, 0
            for j in range(1, n + 1):
                if not used[j]:
                    cur = a[i0][j] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(n + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    return sorted((p[j] - 1, j - 1) for j in range(1, n + 1) if p[j] <= r and j <= c and p[j] > 0)


def match_cost(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``(n_pred, n_true)`` sigmoid-CE + Dice between every predicted mask and every true mask."""
    lg = logits.flatten(1).float()
    tr = truth.flatten(1).float()
    pos = F.softplus(-lg)  # -log σ(x)
    neg = F.softplus(lg)  # -log(1 − σ(x))
    ce = (pos @ tr.T + neg @ (1 - tr).T) / lg.shape[1]
    p = torch.sigmoid(lg)
    dice = 1 - (2 * p @ tr.T + 1) / (p.sum(1)[:, None] + tr.sum(1)[None] + 1)
    return ce + dice


@dataclass
class MaskScores:
    """Per-mask intersections and unions (matched pairs and the unmatched, each against an empty mask)."""

    inter: list[float]
    union: list[float]

    @property
    def ious(self) -> list[float]:
        return [1.0 if u == 0 else i / u for i, u in zip(self.inter, self.union)]


def score_question(logits: torch.Tensor, truth: torch.Tensor) -> MaskScores:
    pred = logits > 0
    truth = truth.bool()
    pairs = hungarian(match_cost(logits, truth)) if len(pred) and len(truth) else []
    inter, union = [], []
    for i, j in pairs:
        inter.append(float((pred[i] & truth[j]).sum()))
        union.append(float((pred[i] | truth[j]).sum()))
    for i in sorted(set(range(len(pred))) - {i for i, _ in pairs}):  # a spurious target: IoU 0, even if empty
        inter.append(0.0)
        union.append(max(float(pred[i].sum()), 1.0))
    for j in sorted(set(range(len(truth))) - {j for _, j in pairs}):
        inter.append(0.0)
        union.append(float(truth[j].sum()))
    return MaskScores(inter, union)


def overlap_counts(logits: torch.Tensor) -> tuple[float, float]:
    """(pixels claimed by ≥ 2 masks, pixels claimed by ≥ 1) of one question's predicted masks."""
    if len(logits) == 0:
        return 0.0, 0.0
    claims = (logits > 0).sum(0)
    return float((claims >= 2).sum()), float((claims >= 1).sum())


@torch.no_grad()
def answer(model: PixelLM, images: torch.Tensor, questions: list[str], max_new: int = 70) -> dict:
    """Generate each question's answer and decode one mask per complete codebook group: ``texts``, ``ids`` (the
    answer tokens) and ``masks`` (a list of ``(n_i, 64, 64)`` logits)."""
    check_image_batch(images)
    if len(questions) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(questions)} questions")
    prompts = prompt_ids(questions)
    generated = model.vlm.generate(images, prompts, max_new)
    texts = [detokenize(g) for g in generated]
    ids, _ = tokenize(questions, texts)
    out = model(images, ids.to(images.device))
    masks, start = [], 0
    for n in out["counts"]:
        masks.append(out["masks"][start : start + n].float().cpu())
        start += n
    return {"texts": texts, "masks": masks}


def text_correct(text: str, truth: list[tuple[int, int]], group: int) -> bool:
    from .data import CODEBOOK

    named = parse_answer(text)
    words = text.split()
    groups = sum(1 for t in range(len(words)) if words[t : t + group] == list(CODEBOOK[:group]))
    return sorted(named) == sorted(truth) and groups == len(named)


def descriptions_of(answer: str) -> list[str]:
    """The answer's target descriptions with their places (``"blue square middle centre"``), sorted, codebook
    tokens and punctuation dropped."""
    from .data import CODEBOOK

    parts = answer.strip().rstrip(".").split(",")
    return sorted(" ".join(w for w in p.split() if w not in CODEBOOK) for p in parts if p.strip())


def text_exact(text: str, true_answer: str, truth: list[tuple[int, int]], group: int) -> bool:
    """:func:`text_correct`, and every target also in its true grid cell: the answer a mask follows (the decoder
    reads the codebook states, which carry the place words written before them)."""
    return text_correct(text, truth, group) and descriptions_of(text) == descriptions_of(true_answer)


def evaluate_batch(model: PixelLM, batch: MuseBatch, chunk: int = 48) -> dict:
    """Raw per-question results on one split: scores of the generated answer, overlap counts, text correctness,
    target counts, and ``teacher`` — the masks' IoUs when the model is handed the *true* answer (teacher-forced),
    which separates what the decoder can do from what the language model writes."""
    device = next(model.parameters()).device
    rows = []
    for s in range(0, len(batch), chunk):
        images = batch.images[s : s + chunk].to(device)
        got = answer(model, images, batch.questions[s : s + chunk])
        ids, _ = tokenize(batch.questions[s : s + chunk], batch.answers[s : s + chunk])
        with torch.no_grad():
            forced = model(images, ids.to(device))["masks"].float().cpu() > 0
        start = 0
        for k, (text, logits) in enumerate(zip(got["texts"], got["masks"])):
            i = s + k
            truth = batch.masks[i]
            tf = forced[start : start + len(truth)]
            start += len(truth)
            teacher = ((tf & truth).flatten(1).sum(1) / (tf | truth).flatten(1).sum(1).clamp(min=1)).tolist()
            rows.append(
                {
                    "scores": score_question(logits, truth),
                    "overlap": overlap_counts(logits),
                    "text": text_correct(text, batch.descriptions[i], model.config.group),
                    "exact": text_exact(text, batch.answers[i], batch.descriptions[i], model.config.group),
                    "template": parse_question(batch.questions[i])[0],
                    "targets": len(truth),
                    "predicted": len(logits),
                    "teacher": teacher,
                }
            )
    return {"rows": rows}


def summarise_rows(rows: list[dict]) -> dict[str, float]:
    inter = [x for r in rows for x in r["scores"].inter]
    union = [x for r in rows for x in r["scores"].union]
    ious = [x for r in rows for x in r["scores"].ious]
    two = sum(r["overlap"][0] for r in rows)
    one = sum(r["overlap"][1] for r in rows)
    return {
        "giou": statistics.fmean(ious) if ious else float("nan"),
        "ciou": sum(inter) / sum(union) if sum(union) else float("nan"),
        "overlap": two / one if one else 0.0,
        "text": statistics.fmean(float(r["text"]) for r in rows),
        "exact": statistics.fmean(float(r["exact"]) for r in rows),
        "count_exact": statistics.fmean(float(r["predicted"] == r["targets"]) for r in rows),
        "teacher_giou": statistics.fmean(x for r in rows for x in r["teacher"]),
        "questions": float(len(rows)),
    }


def evaluate_model(model: PixelLM, eval_seed: int = 0, n: int = EVAL_QUESTIONS) -> dict[str, float]:
    """Every metric on the held-out splits of ``eval_seed``: ``<split>_<metric>`` and ``bucket<k>_<metric>``
    (buckets over all splits' questions by their number of targets)."""
    model.eval()
    metrics: dict[str, float] = {}
    every = []
    for split in SPLITS:
        rows = evaluate_batch(model, held_out(split, n, model.config.group, eval_seed))["rows"]
        every += rows
        metrics |= {f"{split}_{k}": v for k, v in summarise_rows(rows).items()}
    by = Counter(bucket_of(r["targets"]) for r in every)
    for b in BUCKETS:
        rows = [r for r in every if bucket_of(r["targets"]) == b]
        if rows:
            metrics |= {f"bucket{b}_{k}": v for k, v in summarise_rows(rows).items() if k != "questions"}
        metrics[f"bucket{b}_questions"] = float(by[b])
    for name in TEMPLATES:  # which questions the answers get right (every split's questions together)
        rows = [r for r in every if r["template"] == name]
        metrics[f"template_{name}_text"] = statistics.fmean(float(r["text"]) for r in rows) if rows else float("nan")
        metrics[f"template_{name}_questions"] = float(len(rows))
    return metrics


def count_flops(model: PixelLM) -> dict[str, float]:
    """FLOPs of one answer (a two-target question, teacher-forced over its whole answer) and the decoder's share."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = held_out("few", 8, model.config.group, 0)
    i = next(k for k in range(len(batch)) if len(batch.masks[k]) == 2)
    device = next(model.parameters()).device
    images = batch.images[i : i + 1].to(device)
    ids, _ = tokenize([batch.questions[i]], [batch.answers[i]])
    ids = ids.to(device)
    with torch.no_grad():
        with FlopCounterMode(display=False) as total:
            _, hidden, features = model.vlm(images, ids)
            from .models import codebook_states

            states, counts = codebook_states(hidden, ids, model.vlm.visual_tokens, model.config.group)
            owner = torch.zeros(sum(counts), dtype=torch.long, device=device)
            with FlopCounterMode(display=False) as dec:
                feats = model.decoder_features(images, features)
                fused = model.fuse(states)
                model.decoder(feats, owner, fused)
    t, d = total.get_total_flops(), dec.get_total_flops()
    return {"gflops": t / 1e9, "decoder_gflops": d / 1e9, "decoder_share": d / t}


# --------------------------------------------------------------------------------------------- tables
TABLE_METRICS = (
    "few_giou",
    "few_teacher_giou",
    "few_ciou",
    "many_giou",
    "many_teacher_giou",
    "many_ciou",
    "touching_giou",
    "touching_overlap",
    "few_text",
    "many_text",
)
BUCKET_METRICS = tuple(f"bucket{b}_giou" for b in BUCKETS)
TEMPLATE_METRICS = tuple(f"template_{t}_text" for t in TEMPLATES)
MIN_SEEDS = 3
FLOOR_GIOU, FLOOR_TEXT = 0.6, 0.8
LISA_MARGIN = 0.03
PAPER = {
    "rows": [
        {"benchmark": "RefCOCO val cIoU (PixelLM-7B)", "paper": 73.0},
        {"benchmark": "RefCOCO testA cIoU (PixelLM-7B)", "paper": 76.5},
        {"benchmark": "RefCOCO+ val cIoU (PixelLM-7B)", "paper": 66.3},
        {"benchmark": "RefCOCO+ testA cIoU (PixelLM-7B)", "paper": 71.7},
        {"benchmark": "RefCOCO+ testB cIoU (PixelLM-7B)", "paper": 58.3},
        {"benchmark": "RefCOCOg val cIoU (PixelLM-7B)", "paper": 69.3},
        {"benchmark": "RefCOCOg test cIoU (PixelLM-7B)", "paper": 70.5},
        {"benchmark": "ReasonSeg val gIoU / cIoU (LISA-7B)", "paper": "44.4 / 46.0"},
        {"benchmark": "ReasonSeg test gIoU / cIoU (LISA-7B)", "paper": "36.8 / 34.1"},
        {"benchmark": "ReasonSeg val gIoU / cIoU (LISA-7B, fine-tuned)", "paper": "52.9 / 54.0"},
        {"benchmark": "ReasonSeg val gIoU / cIoU (LISA-13B, fine-tuned)", "paper": "56.2 / 62.9"},
        {"benchmark": "MUSE gIoU / cIoU, the N × L ablation, the TFLOPs table", "paper": "not available"},
        {"benchmark": "compute against SAM-based methods", "paper": "'up to 50 % lower' (secondary source)"},
    ],
    "source": "../shared/papers/vision-language.md §1 (PixelLM's referring numbers as cited by later papers; "
    "LISA's Table 1 as copied into PixelLM's repository); the MUSE and ablation numbers could not be retrieved",
}


def arm_tables(runs: dict[str, dict]) -> dict:
    """The arms over their recorded training seeds: ``arms`` (the main metrics, FLOPs, cost), ``by_targets``
    (gIoU bucketed by the number of targets, every split's questions together) and ``by_template`` (the share of
    answers naming exactly the true targets, per question template of the grammar)."""
    from .train import ARM_TITLES, ARMS

    arms, buckets, templates = [], [], []
    for arm in ARMS:
        recs = sorted((r for k, r in runs.items() if k.split("/")[0] == arm), key=lambda r: r["seed"])
        if not recs:
            continue
        base = {"setting": ARM_TITLES[arm], "arm": arm, "seeds": [r["seed"] for r in recs]}
        arms.append(
            base
            | {
                "metrics": summarise([{m: r["metrics"][m] for m in TABLE_METRICS} for r in recs]),
                "gflops": recs[0]["flops"]["gflops"],
                "decoder_share": recs[0]["flops"]["decoder_share"],
                "train_minutes": statistics.fmean(r["wall_time_s"] for r in recs) / 60,
                "trainable": recs[0]["trainable"],
            }
        )
        buckets.append(base | {"metrics": summarise([{m: r["metrics"][m] for m in BUCKET_METRICS} for r in recs])})
        if all(m in r["metrics"] for r in recs for m in TEMPLATE_METRICS):
            per = [{m: r["metrics"][m] for m in TEMPLATE_METRICS} for r in recs]
            templates.append(base | {"metrics": summarise(per)})
    kind = {"setting_name": "arm", "seed_kind": "training"}
    return {
        "arms": {"rows": arms} | kind,
        "by_targets": {"rows": buckets} | kind,
        "by_template": {"rows": templates} | kind,
    }


def _row(tables: dict, name: str, arm: str) -> dict | None:
    return next((r for r in tables[name]["rows"] if r["arm"] == arm), None)


def _fmt(s: dict) -> str:
    return f"{s['mean']:.3f} [{s['min']:.3f}–{s['max']:.3f}]"


def _pending(claim: str) -> dict:
    return {"claim": claim, "outcome": "inconclusive", "sentence": "not trained yet → **inconclusive**."}


def verdict_more_tokens(tables: dict) -> dict:
    """N = 3, L = 2 beats N = 1, L = 1 on the many-target split, and by more than on the few-target split.

    Judged on the answers the arms write themselves (the paper's measure). The sentence adds the same comparison on
    the decoder alone — each arm handed the true answer (teacher-forced gIoU) — because N and L act only on the
    masks, while a missed or invented target in the answer costs a whole mask in either arm."""
    claim = "more tokens per group and two scales help, most as targets increase (N = 3, L = 2 vs N = 1, L = 1)"
    a, b = _row(tables, "arms", "n3_l2"), _row(tables, "arms", "n1_l1")
    if a is None or b is None:
        return _pending(claim)
    side = seed_range_side(a["metrics"]["many_giou"], b["metrics"]["many_giou"])
    gain_many = a["metrics"]["many_giou"]["mean"] - b["metrics"]["many_giou"]["mean"]
    gain_few = a["metrics"]["few_giou"]["mean"] - b["metrics"]["few_giou"]["mean"]
    outcome = outcome_of([side], min(len(a["seeds"]), len(b["seeds"])), MIN_SEEDS)
    if outcome == "reproduced" and gain_many <= gain_few:
        outcome = "inconclusive"  # it helps, but not most where targets are many
    return {
        "claim": claim,
        "outcome": outcome,
        "sentence": f"many-target gIoU {_fmt(a['metrics']['many_giou'])} vs {_fmt(b['metrics']['many_giou'])} "
        f"(gain {gain_many:+.3f}; on the few-target split {gain_few:+.3f}){_decoder_alone(a, b)} → **{outcome}**.",
    }


def _decoder_alone(a: dict, b: dict) -> str:
    key = "many_teacher_giou"
    if key not in a["metrics"] or key not in b["metrics"]:
        return ""
    return f"; the decoder alone, handed the true answers: {_fmt(a['metrics'][key])} vs {_fmt(b['metrics'][key])}"


def verdict_refinement(tables: dict) -> dict:
    claim = "the target refinement loss lowers the overlap rate on touching targets"
    a, b = _row(tables, "arms", "n3_l2_refine"), _row(tables, "arms", "n3_l2")
    if a is None or b is None:
        return _pending(claim)
    sides = [seed_range_side(a["metrics"]["touching_overlap"], b["metrics"]["touching_overlap"], False)]
    outcome = outcome_of(sides, min(len(a["seeds"]), len(b["seeds"])), MIN_SEEDS)
    return {
        "claim": claim,
        "outcome": outcome,
        "sentence": f"touching overlap {_fmt(a['metrics']['touching_overlap'])} with the loss vs "
        f"{_fmt(b['metrics']['touching_overlap'])} without; touching gIoU {_fmt(a['metrics']['touching_giou'])} vs "
        f"{_fmt(b['metrics']['touching_giou'])} → **{outcome}**.",
    }


def verdict_efficiency(tables: dict, margin: float = LISA_MARGIN) -> dict:
    """Fewer FLOPs than the LISA-style baseline at a gIoU (few and many splits) within ``margin`` of it or better."""
    claim = f"PixelLM needs fewer FLOPs than the LISA-style baseline at a gIoU within {margin} of it or better"
    a, b = _row(tables, "arms", "n3_l2"), _row(tables, "arms", "lisa")
    if a is None or b is None:
        return _pending(claim)
    cheaper = a["gflops"] < b["gflops"]
    worst = min(a["metrics"][m]["min"] - b["metrics"][m]["mean"] for m in ("few_giou", "many_giou"))
    best = min(a["metrics"][m]["max"] - b["metrics"][m]["mean"] for m in ("few_giou", "many_giou"))
    if min(len(a["seeds"]), len(b["seeds"])) < MIN_SEEDS:
        outcome = "inconclusive"
    elif not cheaper or best < -margin:
        outcome = "not reproduced"
    else:
        outcome = "reproduced" if worst >= -margin else "inconclusive"
    return {
        "claim": claim,
        "outcome": outcome,
        "sentence": f"{a['gflops']:.3f} vs {b['gflops']:.3f} GFLOPs per answer (decoder path "
        f"{100 * a['decoder_share']:.0f} % vs {100 * b['decoder_share']:.0f} %); gIoU few "
        f"{_fmt(a['metrics']['few_giou'])} vs {_fmt(b['metrics']['few_giou'])}, many "
        f"{_fmt(a['metrics']['many_giou'])} vs {_fmt(b['metrics']['many_giou'])} → **{outcome}**.",
    }


def verdict_floor(tables: dict) -> dict:
    claim = (
        f"the main arm (N = 3, L = 2) reaches gIoU ≥ {FLOOR_GIOU} on the few-target split and names its targets "
        f"correctly in ≥ {FLOOR_TEXT} of answers"
    )
    a = _row(tables, "arms", "n3_l2")
    if a is None:
        return _pending(claim)
    g, t = a["metrics"]["few_giou"], a["metrics"]["few_text"]
    if len(a["seeds"]) < MIN_SEEDS:
        outcome = "inconclusive"
    elif g["min"] >= FLOOR_GIOU and t["min"] >= FLOOR_TEXT:
        outcome = "reproduced"
    elif g["max"] < FLOOR_GIOU or t["max"] < FLOOR_TEXT:
        outcome = "not reproduced"
    else:
        outcome = "inconclusive"
    return {"claim": claim, "outcome": outcome, "sentence": f"gIoU {_fmt(g)}, text {_fmt(t)} → **{outcome}**."}


def verdicts(tables: dict) -> list[dict]:
    return [verdict_more_tokens(tables), verdict_refinement(tables), verdict_efficiency(tables), verdict_floor(tables)]


SLICE_QUESTIONS = 24
SLICE_TOLERANCE = {"slice": 0.06}


def slice_table(models: dict, n: int = SLICE_QUESTIONS) -> dict:
    """The shipped arms on the first ``n`` few- and many-target questions (evaluation seed 0), as the notebook does."""
    from .train import ARM_TITLES

    rows = []
    for arm, model in models.items():
        metrics = {}
        for split in ("few", "many"):
            got = summarise_rows(evaluate_batch(model, held_out(split, n, model.config.group, 0))["rows"])
            metrics |= {f"{split}_giou": got["giou"], f"{split}_text": got["text"], f"{split}_exact": got["exact"]}
        rows.append({"setting": ARM_TITLES[arm], "metrics": summarise([metrics])})
    return {"rows": rows, "setting_name": "arm"}


def live_slice(models: dict) -> dict:
    return {"slice": slice_table(models)}


PROBE_STREAM = 60_000  # inside the eval stream: the probe's training images (+ step) and test images (+ 10_000)


@torch.no_grad()
def _object_features(encoder, batch, key: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    f = F.interpolate(encoder(batch.images)[key], size=batch.images.shape[-1], mode="bilinear", align_corners=False)
    m = batch.instance_masks.float()
    pooled = torch.einsum("bchw,bkhw->bkc", f, m) / m.flatten(2).sum(-1).clamp(min=1)[..., None]
    keep = batch.present & (m.flatten(2).sum(-1) > 0)
    return pooled[keep], batch.shapes[keep], batch.colours[keep]


def probe_encoder(encoder, steps: int = 200, key: str = "deep") -> dict:
    """What the frozen image encoder's features say about each object: a linear probe on its features averaged
    over the object's mask, trained for ``steps`` on fresh world images to predict the object's kind, and another its
    colour; accuracies on held-out images. A diagnostic of the encoder (what the language model and the decoder can
    read), not a result of the paper."""
    from ..worlds import make_shapes
    from .data import WORLD

    out = {}
    for target, classes in (("kind", 3), ("colour", 6)):
        g = torch.Generator().manual_seed(0)
        probe = torch.nn.Linear(encoder.config.width, classes)
        with torch.no_grad():
            probe.weight.copy_(torch.randn(probe.weight.shape, generator=g) * 0.01)
            probe.bias.zero_()
        opt = torch.optim.Adam(probe.parameters(), 1e-2)
        for step in range(steps):
            x, kind, colour = _object_features(
                encoder, make_shapes(32, seeds.PIXELLM_EVAL + PROBE_STREAM + step, WORLD), key
            )
            with torch.enable_grad():
                loss = F.cross_entropy(probe(x), kind if target == "kind" else colour)
                opt.zero_grad()
                loss.backward()
                opt.step()
        x, kind, colour = _object_features(
            encoder, make_shapes(256, seeds.PIXELLM_EVAL + PROBE_STREAM + 10_000, WORLD), key
        )
        y = kind if target == "kind" else colour
        out[target] = float((probe(x).argmax(1) == y).float().mean())
        out[f"{target}_chance"] = 1.0 / classes
    return out


def split_by_recipe(runs: dict[str, dict]) -> tuple[dict[str, dict], list[str]]:
    """The runs trained with today's arm recipe (:class:`~.train.ArmTrainConfig`'s step count, on today's stage-2
    language model: :class:`~.models.LMConfig`, e.g. its visual position table), and the names of those recorded
    under an earlier one (:func:`bytecourse.evaluation.split_by_recipe`)."""
    from .train import ArmTrainConfig

    return evaluation.split_by_recipe(runs, {"steps": ArmTrainConfig().steps, "lm": LMConfig().to_dict()})


def evaluate_pixellm(models: dict, runs: dict[str, dict]) -> dict:
    runs, stale = split_by_recipe(runs)
    tables = arm_tables(runs)
    tables["arms"]["stale_runs"] = stale  # recorded under an earlier recipe: retrain them to bring them back
    tables["slice"] = slice_table(models)
    if models:
        tables["encoder_probe"] = probe_encoder(next(iter(models.values())).vlm.encoder)
    tables["paper"] = PAPER
    tables["verdicts"] = verdicts(tables)
    return tables


def cli_eval(options) -> dict:
    from .. import checkpoints
    from ..device import default_device
    from .train import SHIPPED, load_arm

    device = default_device(options.device)
    models = {a: load_arm(a, device)[0] for a in SHIPPED if checkpoints.checkpoint_available(f"pixellm_{a}")}
    return evaluate_pixellm(models, checkpoints.recorded_runs("pixellm"))


def analysis(tables: dict) -> list[str]:
    """Computed paragraphs on what the tables show (each phrased from the numbers, whichever way they go)."""

    def m(arm: str, metric: str) -> float | None:
        row = _row(tables, "arms", arm)
        return None if row is None else row["metrics"][metric]["mean"]

    out = []
    probe = tables.get("encoder_probe")
    if probe:
        weak = probe["kind"] < 0.5 * (1 + probe["kind_chance"])  # less than halfway from chance to perfect
        out.append(
            f"**What the encoder sees.** A linear probe on the frozen encoder's features, averaged over each object, "
            f"names its colour with accuracy {probe['colour']:.3f} (chance {probe['colour_chance']:.3f}) and its kind "
            f"with {probe['kind']:.3f} (chance {probe['kind_chance']:.3f}). "
            + (
                "The contrastive stage learnt colours and places and little shape: the language model can only guess "
                "kinds, and the decoder has little shape to draw a boundary from."
                if weak
                else "Both are there for the language model and the decoder to read."
            )
        )
    main = _row(tables, "arms", "n3_l2")
    if main is not None:
        tf, gen, text = m("n3_l2", "few_teacher_giou"), m("n3_l2", "few_giou"), m("n3_l2", "few_text")
        out.append(
            f"**Text or masks?** Handed the true answer, the main arm's decoder reaches a few-target gIoU of "
            f"{tf:.3f}; with the answers it writes itself, {gen:.3f}, and {text:.3f} of those answers name the true "
            "targets' colours and kinds (their places: below). A target the answer misses or invents costs a whole "
            "mask, so the gap between the two gIoUs is what the language model's reasoning costs."
        )
    from .train import ARM_TITLES

    live = next((r for r in tables.get("slice", {}).get("rows", []) if r["setting"] == ARM_TITLES["n3_l2"]), None)
    if live is not None and "few_exact" in live["metrics"]:
        text, exact = live["metrics"]["few_text"]["mean"], live["metrics"]["few_exact"]["mean"]
        out.append(
            f"**Colour and kind, but which place?** On the first {SLICE_QUESTIONS} few-target questions the shipped "
            f"main arm's answers name the right colours and kinds in {text:.2f} of cases, and also put every target "
            f"in its true grid cell in {exact:.2f}. A mask follows the place its answer writes (the codebook states "
            "come after the place words), so a wrong cell costs the whole mask although the text metric counts the "
            "answer right."
        )
    by = next((r for r in tables.get("by_template", {}).get("rows", []) if r["arm"] == "n3_l2"), None)
    if by is not None:
        ranked = sorted(TEMPLATES, key=lambda t: by["metrics"][f"template_{t}_text"]["mean"])
        worst, best = ranked[:2], ranked[-1]
        out.append(
            "**Which questions the answers get wrong.** The main arm names exactly the true targets for "
            + " and ".join(f'"{TEMPLATES[t]}" in {by["metrics"][f"template_{t}_text"]["mean"]:.2f}' for t in worst)
            + f' of its answers, against {by["metrics"][f"template_{best}_text"]["mean"]:.2f} for "{TEMPLATES[best]}".'
        )
    grid = [(a, m(a, "many_giou"), m(a, "few_giou")) for a in ("n1_l1", "n2_l1", "n3_l1", "n1_l2", "n2_l2", "n3_l2")]
    grid = [g for g in grid if g[1] is not None]
    if len(grid) >= 2:
        best = max(grid, key=lambda g: g[1])
        worst = min(grid, key=lambda g: g[1])
        out.append(
            f"**N × L.** On the many-target split the best arm is {best[0]} ({best[1]:.3f}) and the weakest "
            f"{worst[0]} ({worst[1]:.3f}); on the few-target split they score {best[2]:.3f} and {worst[2]:.3f}. "
            f"Handed the true answers (the decoder alone, where N and L act), the two score "
            f"{m(best[0], 'many_teacher_giou'):.3f} and {m(worst[0], 'many_teacher_giou'):.3f} on the many-target "
            "split."
        )
    a, b = m("n3_l2_refine", "touching_overlap"), m("n3_l2", "touching_overlap")
    if a is not None and b is not None:
        out.append(
            f"**Refinement.** On questions whose targets touch, {100 * b:.1f} % of the pixels the main arm's masks "
            f"claim are claimed twice; with the refinement loss {100 * a:.1f} % "
            f"({'lower' if a < b else 'not lower'})."
        )
    la, lb = _row(tables, "arms", "n3_l2"), _row(tables, "arms", "lisa")
    if la is not None and lb is not None:
        out.append(
            f"**Cost.** One answer costs {la['gflops']:.3f} GFLOPs with PixelLM's light decoder and "
            f"{lb['gflops']:.3f} with the LISA-style second encoder ({lb['gflops'] / la['gflops']:.1f}×); its decoder "
            f"path is {100 * lb['decoder_share']:.0f} % of the total, PixelLM's {100 * la['decoder_share']:.0f} %."
        )
    return out
