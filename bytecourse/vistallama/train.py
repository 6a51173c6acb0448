"""Chapter 09's training command: ``python -m bytecourse train vistallama``.

Pretrains the tiny LM on narrations (seed 0, shared by every narrator), freezes it, and trains the narrators on it —
the **2×2 ablation** of the paper's two changes, attention rule × projector:

    | projector \\ attention | RoPE               | EDVT               |
    |-----------------------|--------------------|--------------------|
    | sequential            | ``rope``           | ``edvt``           |
    | independent           | ``rope_independent`` | ``edvt_independent`` |

plus two **frame-selection** arms (``rope_select``, ``edvt_select``): the paper's projector keeps every
``T//4``-th output of the recurrence, ending at the last frame; here every 3rd (the last frame of each segment) with
3 × 4 = 12 queries, so the LM reads as many tokens per segment as the every-frame arms (12) and only the selection
differs.

``train vistallama`` trains the LM and the four 2×2 arms at ``--seed``; ``train vistallama --variant ARM --seed S``
one arm on the shipped LM. Every arm run is evaluated when it finishes (:func:`.evaluate.arm_metrics`) and recorded in
the manifest's ``runs`` (``ARM/seedS``); seed 0 of the four 2×2 arms is shipped (fp16): the LM once, then only the
projectors (the arms differ only there), 3.0 MB in all — the chapter's share.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import checkpoints
from .narrator import LMConfig, Narrator, NarratorConfig, PretrainConfig, build_lm, pretrain_lm, train_narrator
from .projector import ProjectorConfig, SequentialProjector

CHECKPOINT = "vistallama_lm"
ARMS = ("rope", "edvt", "rope_independent", "edvt_independent")  # the 2×2 (shipped at seed 0)
SELECTION_ARMS = ("rope_select", "edvt_select")  # recorded, not shipped
# name → (attention rule, projector options)
VARIANTS: dict[str, tuple[str, dict]] = {
    "rope": ("rope", {"sequential": True}),
    "edvt": ("edvt", {"sequential": True}),
    "rope_independent": ("rope", {"sequential": False}),
    "edvt_independent": ("edvt", {"sequential": False}),
    "rope_select": ("rope", {"sequential": True, "keep_every": 3, "queries": 12}),
    "edvt_select": ("edvt", {"sequential": True, "keep_every": 3, "queries": 12}),
}
ROOT = Path("runs/vistallama")


def projector_checkpoint(variant: str) -> str:
    return f"vistallama_projector_{variant}"


def narrator_config(variant: str, seed: int = 0, lm_dim: int = LMConfig.hidden, **overrides) -> NarratorConfig:
    """The training config of arm ``variant`` at ``seed`` (``overrides``: e.g. ``steps``)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    attention, projector = VARIANTS[variant]
    return NarratorConfig(
        projector=ProjectorConfig(lm_dim=lm_dim, **projector), attention=attention, seed=seed, **overrides
    )


def train_arm(lm, variant: str, seed: int, *, steps: int | None = None, **run) -> dict:
    """Train, evaluate and record one arm (``run``: the trainer's options). Returns the training summary with the
    recorded ``metrics`` (absent when ``--max-minutes`` stopped it)."""
    from .evaluate import arm_metrics

    config = narrator_config(variant, seed, lm.config.hidden_size, **({"steps": steps} if steps else {}))
    shipped = seed == 0 and variant in ARMS
    run_dir = ROOT / variant / f"seed{seed}"
    run["resume"] = run.get("resume", False) and (run_dir / "state.json").exists()
    where = {"run_dir": run_dir, "checkpoint": projector_checkpoint(variant) if shipped else None}
    narrator, summary = train_narrator(lm, config, **where, **run)
    summary = {k: v for k, v in summary.items() if k != "losses"}
    if not summary["finished"]:
        return summary
    t0 = time.time()
    metrics = arm_metrics(narrator)
    record = {
        "command": f"python -m bytecourse train vistallama --variant {variant} --seed {seed}",
        "config": {"variant": variant, **narrator_config_dict(config)},
        "seed": seed,
        "device": checkpoints.device_description(torch.device(summary["device"])),
        "wall_time_s": summary["wall_time_s"],
        "eval_time_s": round(time.time() - t0, 1),
        "final_loss": summary.get("final_loss"),
        "lm_sha256": checkpoints.manifest_entry(CHECKPOINT)["sha256"],
        "shipped": projector_checkpoint(variant) if shipped else None,
        "metrics": metrics,
    }
    checkpoints.record_run("vistallama", f"{variant}/seed{seed}", record)
    return summary | {"metrics": {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}}


def narrator_config_dict(config: NarratorConfig) -> dict:
    from .narrator import json_config

    return json_config(config)


def load_lm() -> torch.nn.Module:
    """The shipped LM (hash-verified), frozen."""
    state, entry = checkpoints.load_checkpoint(CHECKPOINT)
    lm = build_lm(LMConfig(**entry["config"]["lm"]))
    lm.load_state_dict(state)
    return lm.eval().requires_grad_(False)


def cli_train(options) -> dict:
    """Without ``--variant``: stage 1 the LM (then frozen; seed 0 only), stage 2 the four 2×2 arms at ``--seed`` —
    resumable runs under ``runs/vistallama/`` sharing one ``--max-minutes`` budget. With ``--variant ARM``: that arm
    on the shipped LM. A run stopped by the budget ends the command (continue with ``--resume``)."""
    deadline = None if options.max_minutes is None else time.time() + 60 * options.max_minutes
    seed = options.seed or 0

    def left() -> float | None:
        return None if deadline is None else max(0.01, (deadline - time.time()) / 60)

    run = {"device": options.device}
    summary: dict = {}
    if options.variant is None:
        if seed != 0 and not checkpoints.checkpoint_available(CHECKPOINT):
            raise ValueError("the LM is trained at seed 0 only: run `train vistallama` (seed 0) first")
        if seed == 0:
            steps = {"steps": options.steps} if options.steps else {}
            lm, s = pretrain_lm(
                PretrainConfig(seed=0, **steps),
                run_dir=ROOT / "lm",
                max_minutes=left(),
                checkpoint=CHECKPOINT,
                resume=options.resume,
                **run,
            )
            summary["lm"] = {k: v for k, v in s.items() if k not in ("losses", "config")}
            if not s["finished"]:
                return summary | {"stopped": "out of --max-minutes during LM pretraining; continue with --resume"}
        arms = ARMS
    else:
        arms = (options.variant,)
    lm = load_lm()
    for name in arms:
        s2 = train_arm(lm, name, seed, steps=options.steps, max_minutes=left(), resume=options.resume, **run)
        summary[name] = s2
        if not s2["finished"]:
            return summary | {"stopped": f"out of --max-minutes while training {name}; continue with --resume"}
    return summary


def load_narrators() -> dict[str, Narrator]:
    """The shipped LM and the four 2×2 narrators (seed 0, hash-verified)."""
    lm = load_lm()
    out = {}
    for name in ARMS:
        attention = VARIANTS[name][0]
        st, e = checkpoints.load_checkpoint(projector_checkpoint(name))
        pcfg = ProjectorConfig.from_dict(e["config"]["projector"])
        proj = SequentialProjector(pcfg)
        proj.load_state_dict(st)
        out[name] = Narrator(lm, proj.eval(), attention)
    return out


def get_narrators(progress: bool = False) -> tuple[dict, str]:
    """The shipped narrators, or (without checkpoints) short runs of the same training code — and which it was."""
    names = [CHECKPOINT] + [projector_checkpoint(n) for n in ARMS]
    if all(checkpoints.checkpoint_available(n) for n in names):
        return load_narrators(), "shipped checkpoints"
    lm, _ = pretrain_lm(PretrainConfig(steps=100), progress=progress)
    out = {}
    for name in ARMS:
        out[name], _ = train_narrator(lm, narrator_config(name, 0, lm.config.hidden_size, steps=40), progress=progress)
    return out, "trained now for a few steps (no shipped checkpoints found): expect poor narrations"
