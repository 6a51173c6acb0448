"""Chapter 07's evaluation (``python -m bytecourse eval dreamtalk``): EmoDiff, EmoDiff + lip refiner and the LSTM
against the world's own clips, a style-guidance sweep, the paper's claims as computed verdicts, and the notebook's
live slice.

Per evaluation seed: 128 held-out clips (sentence, speaker, emotion, intensity in [0.15, 1], style clip); every model
gets the same audio, initial state and style clip. Metrics:

- ``lip_error``: MSE of the mouth coefficients against the clip's mouth target (the phoneme-determined, emotion-shaped
  mouth; :mod:`bytecourse.worlds.talking`);
- ``lse_c`` / ``lse_d``: the sync scorer's confidence and distance (:class:`~bytecourse.dreamtalk.judges.SyncScorer`);
- ``emotion_accuracy`` and ``emotion_strength`` (the classifier's mean probability of the clip's emotion);
- ``emotion_intensity``: how strongly the sequences show their emotion, measured exactly — each clip's mean
  expression projected on the world's direction for its emotion
  (:func:`~bytecourse.worlds.talking.expressed_emotion`), summed over the non-neutral clips, as a ratio to the real
  clips' (1 is right; > 1 exaggerates);
- ``fd``: Fréchet distance to the real clips in the emotion classifier's feature space;
- ``expressiveness``: the upper face's temporal std per clip, as a ratio to the real clips' (1 is right);
- ``diversity``: for 32 of the clips, the std across 4 samples of the same inputs (upper face and pose, frames 1…T−1),
  as a ratio to the world's own std across 4 redraws of what it leaves to chance given those inputs
  (:func:`~bytecourse.worlds.talking.resample_dynamics`); the deterministic LSTM scores 0 by construction.

The "Real clips" row scores the world against itself: its FD and diversity use a redraw of the same inputs.
"""

from __future__ import annotations

import statistics
import time

import torch

from .. import seeds
from ..evaluation import summarise
from ..worlds.talking import (
    EMOTIONS,
    MOUTH_DIMS,
    POSE_DIMS,
    UPPER_DIMS,
    TalkingBatch,
    expressed_emotion,
    make_talking,
    resample_dynamics,
    select,
)
from .judges import frechet_distance
from .sampling import DEFAULT_GUIDANCE_SCALE, generate

EVAL_CLIPS = 128
DIVERSITY_CLIPS, DIVERSITY_SAMPLES = 32, 4
GUIDANCE_SCALES = (1.0, 1.5, 2.0, 3.0)
DEFAULT_GUIDANCE = DEFAULT_GUIDANCE_SCALE
STEPS = 50
ROWS = ("Real clips", "LSTM regressor", "EmoDiff", "EmoDiff + lip refiner")

PAPER = {
    "source": "DREAM-Talk (Zhang et al., arXiv 2312.13578), abstract and project page; the full text was not "
    "retrievable, so no metric values are available (../shared/papers/video-generation.md §4)",
    "claims": [
        "EmoDiff (a diffusion transformer over expression sequences) generates diverse, highly dynamic emotional "
        "expressions; LSTM regressors wash out emotional variety.",
        "A lip refinement network re-predicts the mouth from audio and style: better lip sync, emotion intensity "
        "kept.",
        "Classifier-free guidance on the emotion style strengthens the emotion.",
    ],
    "numbers": "not available",
}


def eval_batch(seed: int, n: int = EVAL_CLIPS) -> TalkingBatch:
    return make_talking(n, seeds.DREAMTALK_EVAL + 1000 * seed)


def _sample_seed(seed: int, k: int = 0) -> int:
    return seeds.DREAMTALK_EVAL + 1000 * seed + 100 + k


@torch.no_grad()
def score(coeffs: torch.Tensor, batch: TalkingBatch, judges: dict, reference: torch.Tensor | None = None) -> dict:
    """The per-clip-averaged metrics of generated ``coeffs`` (B,T,D) for ``batch``'s inputs. ``reference``: the real
    set the FD compares with (default: the batch's own clips)."""
    sync, emo = judges["sync"], judges["emotion"]
    mouth = coeffs[..., MOUTH_DIMS]
    lse = sync.lse(batch.audio, mouth)
    probs = emo(coeffs).softmax(-1)
    real = batch.coeffs if reference is None else reference
    upper = lambda x: x[..., UPPER_DIMS].std(1).mean()  # noqa: E731  temporal std per clip and coefficient
    return {
        "lip_error": float(((mouth - batch.mouth_target) ** 2).mean()),
        "lse_c": float(lse["lse_c"].mean()),
        "lse_d": float(lse["lse_d"].mean()),
        "emotion_accuracy": float((probs.argmax(-1) == batch.emotion).float().mean()),
        "emotion_strength": float(probs.gather(1, batch.emotion[:, None]).mean()),
        "emotion_intensity": float(
            expressed_emotion(coeffs, batch.emotion).sum() / expressed_emotion(batch.coeffs, batch.emotion).sum()
        ),
        "fd": frechet_distance(emo.features(coeffs), emo.features(real)),
        "expressiveness": float(upper(coeffs) / upper(batch.coeffs)),
    }


def _spread(samples: list[torch.Tensor]) -> float:
    """Std across samples of the upper face and pose, frames 1…T−1 (frame 0 is the given initial state)."""
    x = torch.stack(samples)[:, :, 1:]
    dims = torch.cat([x[..., UPPER_DIMS], x[..., POSE_DIMS]], -1)
    return float(dims.std(0).mean())


#: emotions whose dynamics are smaller (calm) or larger (lively) than the average clip's: guidance on the style
#: pushes each away from the style-free average, so it can shrink one group's spread and widen the other's
CALM, LIVELY = ("neutral", "sad"), ("happy", "angry", "surprised")


@torch.no_grad()
def diversity(sample_fn, batch: TalkingBatch, seed: int) -> dict[str, float]:
    """Std across ``DIVERSITY_SAMPLES`` samples of the same inputs, as a ratio to the world's own (see the module):
    over the first ``DIVERSITY_CLIPS`` clips, and over their calm and lively clips separately."""
    sub = select(batch, slice(0, DIVERSITY_CLIPS))
    model = [sample_fn(sub, _sample_seed(seed, 10 + k)) for k in range(DIVERSITY_SAMPLES)]
    world = [resample_dynamics(sub, _sample_seed(seed, 20 + k)) for k in range(DIVERSITY_SAMPLES)]
    out = {"diversity": _spread(model) / _spread(world)}
    for name, group in (("calm", CALM), ("lively", LIVELY)):
        idx = [i for i, e in enumerate(sub.emotion.tolist()) if EMOTIONS[e] in group]
        out[f"diversity_{name}"] = _spread([m[idx] for m in model]) / _spread([w[idx] for w in world])
    return out


def samplers(models: dict, guidance_scale: float = DEFAULT_GUIDANCE, steps: int = STEPS) -> dict:
    """Row name → ``sample(batch, seed) → coefficients`` for the compared systems."""

    def emodiff(refine: bool):
        def sample(b: TalkingBatch, s: int) -> torch.Tensor:
            return generate(
                models["emodiff"],
                b.audio,
                b.initial,
                b.style,
                guidance_scale=guidance_scale,
                steps=steps,
                seed=s,
                refiner=models["refiner"] if refine else None,
            )

        return sample

    return {
        "Real clips": lambda b, s: resample_dynamics(b, s),
        "LSTM regressor": lambda b, s: models["lstm"].predict(b.audio, b.initial, b.style),
        "EmoDiff": emodiff(False),
        "EmoDiff + lip refiner": emodiff(True),
    }


@torch.no_grad()
def evaluate_row(name: str, sample_fn, models: dict, seed: int) -> dict:
    batch = eval_batch(seed)
    out = sample_fn(batch, _sample_seed(seed))
    metrics = score(out, batch, models)
    if name == "Real clips":  # the world's own clips; a redraw of the same inputs is the FD's second set
        metrics = score(batch.coeffs, batch, models, reference=out)
    metrics |= diversity(sample_fn, batch, seed)
    return metrics


def evaluate_dreamtalk(models: dict, seed_list: list[int], progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    t0 = time.time()
    rows = []
    for name, fn in tqdm(samplers(models).items(), disable=not progress, desc="models"):
        rows.append({"setting": name, "metrics": summarise([evaluate_row(name, fn, models, s) for s in seed_list])})
    guidance = []
    for w in tqdm(GUIDANCE_SCALES, disable=not progress, desc="style guidance"):
        fn = samplers(models, guidance_scale=w)["EmoDiff"]
        per_seed = []
        for s in seed_list:
            m = evaluate_row("EmoDiff", fn, models, s)
            keep = ("emotion_accuracy", "emotion_intensity", "diversity", "diversity_calm", "diversity_lively", "fd")
            per_seed.append({k: m[k] for k in keep})
        guidance.append({"setting": f"w = {w:g}", "w": w, "metrics": summarise(per_seed)})
    return {
        "models": {
            "rows": rows,
            "seeds": list(seed_list),
            "clips_per_seed": EVAL_CLIPS,
            "setting_name": "system",
            "sampler": f"EmoDiff: DDPM-like ancestral sampling (DDIM η = 1) over {STEPS} steps, style guidance "
            f"w = {DEFAULT_GUIDANCE:g}",
        },
        "guidance": {
            "rows": guidance,
            "seeds": list(seed_list),
            "clips_per_seed": EVAL_CLIPS,
            "setting_name": "style guidance (EmoDiff, no refiner)",
        },
        "wall_time_s": round(time.time() - t0, 1),
    }


def cli_eval(options) -> dict:
    from .train import load_models

    return evaluate_dreamtalk(load_models(), list(options.seeds))


# ---- verdicts: the paper's claims over the stored tables (three outcomes each) ----


def _row(table: dict, setting: str) -> dict:
    return next(r for r in table["rows"] if r["setting"] == setting)["metrics"]


def _fmt(s: dict, digits: int = 3) -> str:
    return f"{s['mean']:.{digits}f} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"


def _separated(a: dict, b: dict) -> str:
    """'above' / 'below' when a's seed range lies entirely above / below b's, else 'overlap'."""
    if a["min"] > b["max"]:
        return "above"
    if a["max"] < b["min"]:
        return "below"
    return "overlap"


def verdict_expressive(tables: dict) -> dict:
    """EmoDiff is more expressive than the LSTM (closer to the real clips' ratio of 1 and above the LSTM's, beyond the
    seeds' spread) at a Fréchet distance no worse than the LSTM's (its mean within the LSTM's range or below)."""
    t = tables["models"]
    e, l_ = _row(t, "EmoDiff"), _row(t, "LSTM regressor")
    ex, lx = e["expressiveness"], l_["expressiveness"]
    closer = abs(ex["mean"] - 1) < abs(lx["mean"] - 1)
    side = _separated(ex, lx)
    fd_ok = e["fd"]["mean"] <= l_["fd"]["max"]
    if side == "above" and closer and fd_ok:
        outcome = "reproduced"
    elif side == "below" or not closer or e["fd"]["min"] > l_["fd"]["max"]:
        outcome = "not reproduced"
    else:
        outcome = "inconclusive"
    return {
        "claim": "EmoDiff is more expressive than the LSTM at no worse FD",
        "outcome": outcome,
        "sentence": f"Expressiveness (upper-face temporal std ÷ real): EmoDiff {_fmt(ex)}, LSTM {_fmt(lx)}; "
        f"FD EmoDiff {_fmt(e['fd'])}, LSTM {_fmt(l_['fd'])} → **{outcome}**.",
    }


def verdict_refiner(tables: dict, max_drop: float = 0.02) -> dict:
    """The lip refiner lowers the lip error (beyond the seeds' spread) while emotion accuracy drops by at most
    ``max_drop``."""
    t = tables["models"]
    e, r = _row(t, "EmoDiff"), _row(t, "EmoDiff + lip refiner")
    side = _separated(r["lip_error"], e["lip_error"])
    drop = e["emotion_accuracy"]["mean"] - r["emotion_accuracy"]["mean"]
    if side == "below" and drop <= max_drop:
        outcome = "reproduced"
    elif side == "above" or drop > max_drop + r["emotion_accuracy"]["std"] + e["emotion_accuracy"]["std"]:
        outcome = "not reproduced"
    else:
        outcome = "inconclusive"
    return {
        "claim": "the lip refiner lowers lip error and keeps the emotion",
        "outcome": outcome,
        "sentence": f"Lip error: EmoDiff {_fmt(e['lip_error'], 4)} → + refiner {_fmt(r['lip_error'], 4)}; emotion "
        f"accuracy {_fmt(e['emotion_accuracy'])} → {_fmt(r['emotion_accuracy'])} (drop {drop:+.3f}, allowed "
        f"≤ {max_drop}) → **{outcome}**.",
    }


def verdict_guidance(tables: dict) -> dict:
    """Style guidance trades diversity for emotion strength: from the smallest to the largest w, the expressed emotion
    intensity (exact, from the world's emotion directions) rises and diversity falls, each beyond the seeds' spread."""
    rows = sorted(tables["guidance"]["rows"], key=lambda r: r["w"])
    lo, hi = rows[0]["metrics"], rows[-1]["metrics"]
    strength = _separated(hi["emotion_intensity"], lo["emotion_intensity"])
    div = _separated(hi["diversity"], lo["diversity"])
    if strength == "above" and div == "below":
        outcome = "reproduced"
    elif strength == "below" or div == "above":
        outcome = "not reproduced"
    else:
        outcome = "inconclusive"
    sentence = (
        f"From {rows[0]['setting']} to {rows[-1]['setting']}: expressed emotion intensity (÷ real) "
        f"{_fmt(lo['emotion_intensity'])} → {_fmt(hi['emotion_intensity'])}, diversity {_fmt(lo['diversity'])} → "
        f"{_fmt(hi['diversity'])} → **{outcome}**."
    )
    if "diversity_calm" in lo:
        sentence += (
            f" Diversity of the calm clips ({', '.join(CALM)}) {_fmt(lo['diversity_calm'])} → "
            f"{_fmt(hi['diversity_calm'])}; of the lively ones ({', '.join(LIVELY)}) {_fmt(lo['diversity_lively'])} → "
            f"{_fmt(hi['diversity_lively'])}."
        )
    return {"claim": "style guidance trades diversity for emotion strength", "outcome": outcome, "sentence": sentence}


def verdict_floor(tables: dict, sync_ratio: float = 0.8, accuracy: float = 0.8) -> dict:
    """EmoDiff + refiner reaches ≥ ``sync_ratio`` of the real clips' LSE-C and ≥ ``accuracy`` emotion accuracy (on the
    mean; inconclusive when a threshold lies inside the seeds' range)."""
    t = tables["models"]
    r, real = _row(t, "EmoDiff + lip refiner"), _row(t, "Real clips")
    ratio = [c / g for c, g in zip(r["lse_c"]["per_seed"], real["lse_c"]["per_seed"])]
    acc = r["emotion_accuracy"]
    ok_mean = statistics.fmean(ratio) >= sync_ratio and acc["mean"] >= accuracy
    ok_all = min(ratio) >= sync_ratio and acc["min"] >= accuracy
    bad_all = max(ratio) < sync_ratio or acc["max"] < accuracy
    outcome = "reproduced" if ok_all else ("not reproduced" if bad_all or not ok_mean else "inconclusive")
    return {
        "claim": "floor: refined lip sync ≥ 0.8 of real, emotion accuracy ≥ 0.8",
        "outcome": outcome,
        "sentence": f"EmoDiff + refiner: LSE-C {statistics.fmean(ratio):.2f} [{min(ratio):.2f}–{max(ratio):.2f}] of "
        f"the real clips' (≥ {sync_ratio}), emotion accuracy {_fmt(acc)} (≥ {accuracy}) → **{outcome}**.",
    }


def verdicts(tables: dict) -> list[dict]:
    return [verdict_expressive(tables), verdict_refiner(tables), verdict_guidance(tables), verdict_floor(tables)]


SLICE_TOLERANCE = 0.03  # same weights, seed and noise: only float reduction order differs across CPUs
SLICE_ROWS = ("LSTM regressor", "EmoDiff + lip refiner")
SLICE_METRICS = ("lip_error", "lse_c", "emotion_accuracy", "expressiveness")


def live_slice(models: dict, rows: tuple[str, ...] = SLICE_ROWS, metrics: tuple[str, ...] = SLICE_METRICS) -> dict:
    """Evaluation seed 0 of the ``models`` table's ``rows`` (without the diversity redraws), recomputed."""
    fns = samplers(models)
    live = []
    for name in rows:
        batch = eval_batch(0)
        m = score(fns[name](batch, _sample_seed(0)), batch, models)
        live.append({"setting": name, "metrics": summarise([{k: m[k] for k in metrics}])})
    return {"models": {"rows": live, "setting_name": "system"}}
