"""Chapter 03's evaluation: the paper's metrics on held-out perception images, every arm over its training seeds.

- **Segmentation**: mIoU — per class, |pred ∩ truth| / |pred ∪ truth| summed over all held-out pixels, then the mean
  over the classes (background included, as ADE20K's and Cityscapes' protocols include every class).
- **Depth** (NYUv2's protocol): RMSE = √mean (d̂ − d)², δ1 = the share of pixels with max(d̂/d, d/d̂) < 1.25, and
  REL = mean |d̂ − d| / d. Depths are the world's, in (0, 1] (the background ramp runs to 1).

Held-out images: :data:`EVAL_IMAGES` drawn from ``seeds.METAPROMPTS_EVAL`` — no training batch is among them.
"""

from __future__ import annotations

import statistics
from functools import lru_cache

import torch

from .. import seeds
from ..worlds import ShapesConfig, make_shapes
from .models import LABEL_SETS

EVAL_IMAGES = 512
EVAL_BATCH = 64


@lru_cache(maxsize=4)
def held_out(labels: str = "shape", n: int = EVAL_IMAGES) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (n,3,H,W), labels (n,H,W) and depth (n,H,W) of the held-out perception images."""
    from .train import labels_of

    parts = [
        make_shapes(min(EVAL_BATCH, n - i), seeds.METAPROMPTS_EVAL + i // EVAL_BATCH, ShapesConfig.perception())
        for i in range(0, n, EVAL_BATCH)
    ]
    return (
        torch.cat([b.images for b in parts]),
        torch.cat([labels_of(b, labels) for b in parts]),
        torch.cat([b.depth for b in parts]),
    )


def confusion(pred: torch.Tensor, truth: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) counts, rows = truth."""
    idx = truth.flatten().long() * classes + pred.flatten().long()
    return torch.bincount(idx, minlength=classes * classes).view(classes, classes)


def iou_from_confusion(conf: torch.Tensor) -> torch.Tensor:
    """Per-class IoU (NaN for a class absent from both prediction and truth)."""
    inter = conf.diag().double()
    union = conf.sum(0).double() + conf.sum(1).double() - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))


def depth_metrics(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    valid = truth > 0
    p, t = pred[valid].double().clamp(min=1e-6), truth[valid].double()
    ratio = torch.maximum(p / t, t / p)
    return {
        "rmse": float((p - t).pow(2).mean().sqrt()),
        "delta1": float((ratio < 1.25).double().mean()),
        "rel": float(((p - t).abs() / t).mean()),
    }


@torch.no_grad()
def predict(model, images: torch.Tensor, loops: int | None = None) -> dict[str, torch.Tensor]:
    """Class map and depth for ``images`` in batches (on the model's device)."""
    device = next(model.parameters()).device
    out: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(images), EVAL_BATCH):
        o = model(images[i : i + EVAL_BATCH].to(device), loops)
        if "logits" in o:
            out.setdefault("classes", []).append(o["logits"].argmax(1).cpu())
        if "depth" in o:
            out.setdefault("depth", []).append(o["depth"].float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def evaluate_model(model, data, loops: int | None = None) -> dict[str, float]:
    """mIoU, per-class IoU, RMSE, δ1 and REL of ``model`` on ``data = (images, labels, depth)``."""
    images, labels, depth = data
    pred = predict(model, images, loops)
    metrics: dict[str, float] = {}
    if "classes" in pred:
        classes = LABEL_SETS[model.config.labels]
        iou = iou_from_confusion(confusion(pred["classes"], labels, classes))
        metrics["miou"] = float(iou.nanmean())
        metrics |= {f"iou_{i}": float(v) for i, v in enumerate(iou.tolist())}
    if "depth" in pred:
        metrics |= depth_metrics(pred["depth"], depth)
    return metrics


# ---- the chapter's tables (``python -m bytecourse eval metaprompts``) ----

METRICS = ("miou", "rmse", "delta1", "rel")
LOWER_IS_BETTER = {"rmse", "rel"}
MIN_SEEDS = 3  # training seeds an arm needs before a comparison can settle a claim
SLICE_IMAGES = 128  # the notebook's live slice: the shipped arms on the first 128 held-out images
SLICE_TOLERANCE = 0.01  # same weights and images: only float reduction order differs across CPUs
PAPER = {
    "source": "Meta Prompts (Wan et al., arXiv 2312.14733), the official repository's README "
    "(../shared/papers/guidance-and-gradients.md §3.4); its ablation numbers (loops, prompts, re-arrangement, "
    "text prompts) could not be verified offline and are not available",
    "rows": [
        {"benchmark": "NYUv2 depth", "metric": "RMSE", "value": 0.223},
        {"benchmark": "NYUv2 depth", "metric": "δ1", "value": 0.976},
        {"benchmark": "NYUv2 depth", "metric": "REL", "value": 0.061},
        {"benchmark": "KITTI Eigen depth", "metric": "RMSE", "value": 1.928},
        {"benchmark": "ADE20K segmentation (single-scale)", "metric": "mIoU", "value": 0.5583},
        {"benchmark": "ADE20K segmentation (multi-scale + flip)", "metric": "mIoU", "value": 0.5681},
        {"benchmark": "Cityscapes segmentation (no Mapillary, single-scale)", "metric": "mIoU", "value": 0.8438},
    ],
    "claims": [
        "meta prompts beat the null embedding and class-name text embeddings",
        "re-arranging the features with the prompts helps",
        "more refinement loops help (the paper uses 3)",
    ],
}


def _summary_rows(runs: dict[str, dict]) -> tuple[dict, dict]:
    from ..evaluation import summarise
    from .train import ARM_TITLES, ARMS

    rows, per_class = [], []
    for arm in ARMS:
        recs = sorted((r for k, r in runs.items() if k.split("/")[0] == arm), key=lambda r: r["seed"])
        if not recs:
            continue
        metrics = summarise([{m: r["metrics"][m] for m in METRICS} for r in recs])
        rows.append(
            {
                "setting": ARM_TITLES[arm],
                "arm": arm,
                "seeds": [r["seed"] for r in recs],
                "metrics": metrics,
                "parameters": recs[0]["parameters"],
                "trainable": recs[0]["trainable"],
                "gflops": recs[0]["flops"] / 1e9,
                "train_minutes": statistics.fmean(r["wall_time_s"] for r in recs) / 60,
            }
        )
        ious = sorted(k for k in recs[0]["metrics"] if k.startswith("iou_"))
        per_class.append(
            {
                "setting": ARM_TITLES[arm],
                "arm": arm,
                "metrics": summarise([{k: r["metrics"][k] for k in ious} for r in recs]),
            }
        )
    return (
        {"rows": rows, "setting_name": "arm", "seed_kind": "training"},
        {"rows": per_class, "setting_name": "arm", "seed_kind": "training"},
    )


def slice_table(models: dict, n: int = SLICE_IMAGES) -> dict:
    """The shipped arms' metrics on the first ``n`` held-out images (one "seed": the shipped training seed 0)."""
    from ..evaluation import summarise
    from .train import ARM_TITLES

    images, labels, depth = (t[:n] for t in held_out("shape"))
    rows = []
    for arm, model in models.items():
        m = evaluate_model(model, (images, labels, depth))
        rows.append({"setting": ARM_TITLES[arm], "metrics": summarise([{k: m[k] for k in METRICS}])})
    return {"rows": rows, "setting_name": "arm"}


def live_slice(models: dict) -> dict:
    """What the notebook recomputes: :func:`slice_table` of the shipped arms (checked against the stored one)."""
    return {"slice": slice_table(models)}


def loops_at_inference(model, loops: tuple[int, ...] = (1, 2, 3)) -> dict:
    """The shipped main arm (trained with 3 loops) run with fewer loops on all held-out images."""
    from ..evaluation import summarise

    data = held_out("shape")
    rows = []
    for k in loops:
        m = evaluate_model(model, data, loops=k)
        rows.append(
            {
                "setting": f"{k} loop{'s' if k > 1 else ''}",
                "loops": k,
                "metrics": summarise([{x: m[x] for x in METRICS}]),
            }
        )
    return {"rows": rows, "setting_name": "loops run"}


def evaluate_metaprompts(models: dict, runs: dict[str, dict]) -> dict:
    arms, per_class = _summary_rows(runs)
    tables = {"arms": arms, "per_class": per_class, "slice": slice_table(models), "paper": PAPER}
    from .train import MAIN_ARM

    if MAIN_ARM in models:
        tables["loops_at_inference"] = loops_at_inference(models[MAIN_ARM])
    tables["verdicts"] = verdicts(tables)
    return tables


def cli_eval(options) -> dict:
    from .. import checkpoints
    from .train import SHIPPED, load_arm

    models = {arm: load_arm(arm, options.device)[0] for arm in SHIPPED}
    runs = checkpoints.recorded_runs("metaprompts")
    for arm in SHIPPED:  # the shipped weights (fp16) must still give what their run recorded (fp32)
        rec = runs.get(f"{arm}/seed0")
        if rec is None:
            raise ValueError(f"no recorded run for the shipped arm {arm}: train it with --variant {arm} --seed 0")
        now = evaluate_model(models[arm], held_out("shape"))
        if abs(now["miou"] - rec["metrics"]["miou"]) > 0.01:
            raise ValueError(f"shipped {arm}: mIoU {now['miou']:.3f} now vs {rec['metrics']['miou']:.3f} recorded")
    return evaluate_metaprompts(models, runs)


# ---- verdicts: the paper's claims over the stored tables (three outcomes each) ----


def _row(tables: dict, arm: str) -> dict | None:
    return next((r for r in tables["arms"]["rows"] if r["arm"] == arm), None)


def _fmt(s: dict, digits: int = 3) -> str:
    return f"{s['mean']:.{digits}f} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"


def _side(a: dict, b: dict, metric: str) -> str:
    """'better' / 'worse' when a's seed range lies entirely on the good / bad side of b's, else 'overlap'."""
    from ..evaluation import seed_range_side

    return seed_range_side(a, b, higher_is_better=metric not in LOWER_IS_BETTER)


def compare_arms(tables: dict, claim: str, arm: str, baselines: tuple[str, ...], metrics=("miou", "rmse")) -> dict:
    """``arm`` beats every baseline on every metric: reproduced when each seed range lies entirely on the better
    side, not reproduced when any lies entirely on the worse side, inconclusive otherwise (or a row is missing)."""
    a = _row(tables, arm)
    rows = {b: _row(tables, b) for b in baselines}
    if a is None or any(r is None for r in rows.values()):
        missing = [x for x, r in {arm: a, **rows}.items() if r is None]
        return {
            "claim": claim,
            "outcome": "inconclusive",
            "sentence": f"not trained yet ({', '.join(missing)}) → **inconclusive**.",
        }
    sides = [_side(a["metrics"][m], r["metrics"][m], m) for r in rows.values() for m in metrics]
    outcome = (
        "reproduced" if all(s == "better" for s in sides) else "not reproduced" if "worse" in sides else "inconclusive"
    )
    few = min(len(x["metrics"][metrics[0]]["per_seed"]) for x in (a, *rows.values())) < MIN_SEEDS
    if few:  # a diagnostic arm trained on one seed cannot settle a claim
        outcome = "inconclusive"
    parts = []
    for m in metrics:
        cells = [f"{a['setting']} {_fmt(a['metrics'][m])} (n = {len(a['metrics'][m]['per_seed'])})"] + [
            f"{r['setting']} {_fmt(r['metrics'][m])} (n = {len(r['metrics'][m]['per_seed'])})" for r in rows.values()
        ]
        parts.append(f"{m}: " + ", ".join(cells))
    note = f" (an arm has fewer than {MIN_SEEDS} training seeds)" if few else ""
    return {"claim": claim, "outcome": outcome, "sentence": "; ".join(parts) + f" → **{outcome}**{note}."}


def verdict_floor(tables: dict, arm: str = "loops_3", threshold: float = 0.7) -> dict:
    """The main arm reaches mIoU ≥ ``threshold`` on every training seed (none: not reproduced; some: inconclusive)."""
    claim = f"the main arm reaches mIoU ≥ {threshold}"
    a = _row(tables, arm)
    if a is None:
        return {"claim": claim, "outcome": "inconclusive", "sentence": "not trained yet → **inconclusive**."}
    s = a["metrics"]["miou"]
    outcome = "reproduced" if s["min"] >= threshold else "not reproduced" if s["max"] < threshold else "inconclusive"
    return {
        "claim": claim,
        "outcome": outcome,
        "sentence": f"{a['setting']} mIoU {_fmt(s)} over {len(s['per_seed'])} training seeds → **{outcome}**.",
    }


def verdict_hard_enough(tables: dict, threshold: float = 0.85) -> dict:
    """The world is hard enough: the plain conv segmenter (same parameters, steps, data) stays ≤ ``threshold``."""
    claim = f"the perception world is hard: the plain conv net's mIoU ≤ {threshold}"
    c = _row(tables, "conv")
    if c is None:
        return {"claim": claim, "outcome": "inconclusive", "sentence": "not trained yet → **inconclusive**."}
    s = c["metrics"]["miou"]
    outcome = "reproduced" if s["max"] <= threshold else "not reproduced" if s["min"] > threshold else "inconclusive"
    return {
        "claim": claim,
        "outcome": outcome,
        "sentence": f"plain conv net mIoU {_fmt(s)} over {len(s['per_seed'])} training seeds → **{outcome}**.",
    }


def verdicts(tables: dict) -> list[dict]:
    return [
        compare_arms(tables, "meta prompts beat null and class-name embeddings", "meta", ("null", "class_names")),
        compare_arms(tables, "re-arrangement helps", "loops_1", ("meta",)),
        compare_arms(tables, "more loops help (3 vs 1)", "loops_3", ("loops_1",)),
        compare_arms(tables, "pretraining helps (vs the same UNet randomly initialised)", "loops_3", ("random_init",)),
        compare_arms(
            tables,
            "pretraining helps at matched tuning (every weight tuned, 3 loops; the diagnostic arm)",
            "loops_3_full",
            ("random_init",),
        ),
        compare_arms(tables, "the diffusion UNet beats a plain conv net of the same size", "loops_3", ("conv",)),
        verdict_floor(tables),
        verdict_hard_enough(tables),
    ]


def _lora_rank() -> int:
    from .train import ARMS, MAIN_ARM

    return ARMS[MAIN_ARM].lora_rank


def analysis(tables: dict) -> list[str]:
    """Where the toy disagrees with the paper, what the stored tables say about why — each sentence computed from
    them (the comparisons pick their words from the numbers; nothing here is typed in)."""
    out = []
    m = {r["arm"]: r["metrics"]["miou"] for r in tables["arms"]["rows"]}

    def f(arm: str) -> str:
        return f"{m[arm]['mean']:.3f} [{m[arm]['min']:.3f}–{m[arm]['max']:.3f}]"

    one = [a for a in ("null", "class_names", "meta", "loops_1") if a in m]
    if len(one) > 1:
        means = [m[a]["mean"] for a in one]
        out.append(
            "**What the cross-attention reads.** With one loop, the null embedding, the class names, the meta "
            f"prompts and the meta prompts with re-arrangement lie within {max(means) - min(means):.3f} mIoU of each "
            f"other ({', '.join(f'{a} {f(a)}' for a in one)}). In the toy UNet cross-attention sits only at 8×8 and "
            "4×4 while the heads also read the 16×16 features, which may leave the context little room to matter "
            "(a guess, not measured)."
        )
    inf = tables.get("loops_at_inference", {}).get("rows", [])
    if "loops_3" in m and "loops_1" in m and inf:
        by = {r["loops"]: r["metrics"]["miou"]["mean"] for r in inf}
        if _side(m["loops_3"], m["loops_1"], "miou") == "worse":
            word, rest = "below", ""
        elif m["loops_3"]["mean"] <= m["loops_1"]["mean"]:
            word, rest = "below", " on average (the seed ranges touch)"
        else:
            word, rest = "above", ""
        out.append(
            f"**Loops.** Three loops score {f('loops_3')}, {word} one loop's {f('loops_1')}{rest}. The three-loop "
            f"model run with only its first loop scores {by.get(1, float('nan')):.3f}: its later loops do the work, "
            "reading the output layer's 3-channel map of the previous features — a narrow channel for a UNet that may "
            f"only change through a rank-{_lora_rank()} LoRA (the tuning diagnostic tests this)."
        )
    if "loops_3_full" in m and "loops_1_full" in m:
        d = m["loops_3_full"]["mean"] - m["loops_1_full"]["mean"]
        side = _side(m["loops_3_full"], m["loops_1_full"], "miou")
        out.append(
            "**Loops, at matched tuning** (every UNet weight tuned; diagnostics, "
            f"{len(m['loops_3_full']['per_seed'])} and {len(m['loops_1_full']['per_seed'])} seed(s)): three loops "
            f"{f('loops_3_full')}, one loop {f('loops_1_full')} ({d:+.3f}). "
            + (
                "With the whole UNet free, the extra loops pay (the seed ranges separate), so the LoRA delta is what "
                "keeps them from paying in the LoRA arms."
                if side == "better"
                else "With the whole UNet free, the extra loops cost (the seed ranges separate)."
                if side == "worse"
                else "With the whole UNet free the seed ranges overlap: at this budget of steps the loops do not "
                "clearly pay even without the LoRA delta."
            )
        )
    if "loops_3_full" in m and "loops_3" in m:
        gain = m["loops_3_full"]["mean"] - m["loops_3"]["mean"]
        out.append(
            "**Tuning.** Tuning every weight of the pretrained UNet (3 loops, diagnostic, "
            f"{len(m['loops_3_full']['per_seed'])} seed(s)) scores {f('loops_3_full')} against the LoRA arm's "
            f"{f('loops_3')}: {gain:+.3f}. "
            + (
                "The LoRA delta is what holds the diffusion arms back."
                if gain > m["loops_3"]["max"] - m["loops_3"]["mean"] + 0.01
                else "The LoRA delta does not explain the gap."
            )
        )
    if "loops_3_full" in m and "random_init" in m:
        d = m["loops_3_full"]["mean"] - m["random_init"]["mean"]
        out.append(
            f"**Pretraining, at matched tuning.** Every weight tuned, 3 loops: pretrained {f('loops_3_full')}, random "
            f"{f('random_init')} ({d:+.3f})."
        )
    if "conv" in m:
        best = max((a for a in m if a != "conv"), key=lambda a: m[a]["mean"])
        from .pretrain import PretrainConfig
        from .train import ARMS, ArmTrainConfig

        pre, arm = PretrainConfig(), ArmTrainConfig()
        verdict = (
            "does not beat"
            if m[best]["mean"] < m["conv"]["mean"]
            else "scores above"
            if _side(m[best], m["conv"], "miou") == "better"
            else "is level with (the seed ranges overlap)"
        )
        out.append(
            f"**Against a plain conv net.** The best UNet arm ({best}, {f(best)}, n = {len(m[best]['per_seed'])}) "
            f"{verdict} the conv net's "
            f"{f('conv')}; the UNet's perception fine-tune saw {pre.steps * pre.batch:,} unlabelled images, the arms "
            f"{arm.steps * arm.batch:,} labelled ones."
        )
        light = [a for a in m if a != "conv" and ARMS[a].backbone == "unet" and ARMS[a].tune == "lora"]
        if light and best not in light:
            top = max(light, key=lambda a: m[a]["mean"])
            out[-1] += (
                f" The best arm that ships as a LoRA delta ({top}, {f(top)}) is "
                f"{m['conv']['mean'] - m[top]['mean']:.3f} below it on average."
                if m[top]["mean"] < m["conv"]["mean"]
                else f" The best arm that ships as a LoRA delta ({top}, {f(top)}) is level with or above it."
            )
    return out
