"""Chapter 09's training command: ``python -m bytecourse train vistallama``.

Pretrains the tiny LM on narrations, freezes it, and trains three narrators on it: RoPE + sequential projector,
EDVT + sequential projector, EDVT + independent projector. Each is shipped (fp16): the LM once, then only the
projectors (the ablations differ only there).
"""

from __future__ import annotations

from pathlib import Path

from .. import checkpoints
from .narrator import LMConfig, Narrator, NarratorConfig, PretrainConfig, build_lm, pretrain_lm, train_narrator
from .projector import ProjectorConfig, SequentialProjector

CHECKPOINT = "vistallama_lm"
VARIANTS = {"rope": ("rope", True), "edvt": ("edvt", True), "edvt_independent": ("edvt", False)}


def projector_checkpoint(variant: str) -> str:
    return f"vistallama_projector_{variant}"


def cli_train(options) -> dict:
    """Stage 1: the LM (then frozen); stage 2: the three narrators' projectors — four resumable runs under
    ``runs/vistallama/`` sharing one ``--max-minutes`` budget, each shipped when it completes. A run stopped by the
    budget ends the command (continue with ``--resume``)."""
    import time

    deadline = None if options.max_minutes is None else time.time() + 60 * options.max_minutes
    root = Path("runs/vistallama")

    def left() -> float | None:
        return None if deadline is None else max(0.01, (deadline - time.time()) / 60)

    steps = {"steps": options.steps} if options.steps else {}
    pre = PretrainConfig(seed=options.seed, **steps)
    run = {"device": options.device}
    lm, s = pretrain_lm(
        pre, run_dir=root / "lm", max_minutes=left(), checkpoint=CHECKPOINT, resume=options.resume, **run
    )
    summary = {"lm": {k: v for k, v in s.items() if k not in ("losses", "config")}}
    if not s["finished"]:
        return summary | {"stopped": "out of --max-minutes during LM pretraining; continue with --resume"}
    for name, (attention, sequential) in VARIANTS.items():
        config = NarratorConfig(
            projector=ProjectorConfig(sequential=sequential, lm_dim=pre.lm.hidden),
            attention=attention,
            seed=options.seed,
            **steps,
        )
        resume = options.resume and (root / name / "state.json").exists()  # a later run may not have started yet
        where = {"run_dir": root / name, "checkpoint": projector_checkpoint(name)}
        _, s2 = train_narrator(lm, config, max_minutes=left(), resume=resume, **where, **run)
        summary[name] = {k: v for k, v in s2.items() if k != "losses"}
        if not s2["finished"]:
            return summary | {"stopped": f"out of --max-minutes while training {name}; continue with --resume"}
    return summary


def load_narrators() -> dict[str, Narrator]:
    """The shipped LM and the three narrators (hash-verified)."""
    state, entry = checkpoints.load_checkpoint(CHECKPOINT)
    lm_cfg = LMConfig(**entry["config"]["lm"])
    lm = build_lm(lm_cfg)
    lm.load_state_dict(state)
    lm.eval().requires_grad_(False)
    out = {}
    for name, (attention, _) in VARIANTS.items():
        st, e = checkpoints.load_checkpoint(projector_checkpoint(name))
        pcfg = ProjectorConfig.from_dict(e["config"]["projector"])
        proj = SequentialProjector(pcfg)
        proj.load_state_dict(st)
        out[name] = Narrator(lm, proj.eval(), attention)
    return out


def get_narrators(progress: bool = False) -> tuple[dict, str]:
    """The shipped narrators, or (without checkpoints) short runs of the same training code — and which it was."""
    names = [CHECKPOINT] + [projector_checkpoint(n) for n in VARIANTS]
    if all(checkpoints.checkpoint_available(n) for n in names):
        return load_narrators(), "shipped checkpoints"
    lm, _ = pretrain_lm(PretrainConfig(steps=100), progress=progress)
    out = {}
    for name, (attention, sequential) in VARIANTS.items():
        config = NarratorConfig(
            projector=ProjectorConfig(sequential=sequential, lm_dim=lm.config.hidden_size),
            attention=attention,
            steps=40,
        )
        out[name], _ = train_narrator(lm, config, progress=progress)
    return out, "trained now for a few steps (no shipped checkpoints found): expect poor narrations"
