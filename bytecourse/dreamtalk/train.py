"""Chapter 07's training command: ``python -m bytecourse train dreamtalk``.

Five resumable runs under ``runs/dreamtalk/``, sharing one ``--max-minutes`` budget and each shipped (fp16) when it
completes: the two evaluation judges (lip-sync scorer, emotion classifier; trained on ground truth only), EmoDiff
(with an EMA, as diffusion models are), the LSTM baseline and the lip refiner. Every batch is drawn fresh from the
Talking world with a seed made of the run, the training seed and the step, so a resumed run sees the data an
uninterrupted one would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import checkpoints, seeds
from ..configs import JSONConfig
from ..trainer import quick_run, seeded_init, train_and_ship
from ..worlds.talking import MOUTH_DIMS, TalkingConfig, make_talking
from .judges import EmotionClassifier, SyncScorer
from .models import DreamTalkConfig, EmoDiff, LipRefiner, LSTMRegressor
from .sampling import emodiff_loss

RUNS = ("sync", "emotion", "emodiff", "lstm", "refiner")
CHECKPOINTS = {run: f"dreamtalk_{run}" for run in RUNS}
_RUN_INDEX = {run: i for i, run in enumerate(RUNS)}


@dataclass(frozen=True)
class RunSpec(JSONConfig):
    steps: int
    lr: float
    batch: int
    warmup: int = 100


@dataclass(frozen=True)
class DreamTalkTrainConfig(JSONConfig):
    model: DreamTalkConfig = field(default_factory=DreamTalkConfig)
    sync: RunSpec = RunSpec(steps=1500, lr=2e-3, batch=32)
    emotion: RunSpec = RunSpec(steps=1500, lr=2e-3, batch=64)
    emodiff: RunSpec = RunSpec(steps=8000, lr=5e-4, batch=64, warmup=300)
    lstm: RunSpec = RunSpec(steps=3000, lr=1e-3, batch=64)
    refiner: RunSpec = RunSpec(steps=3000, lr=1e-3, batch=64)
    seed: int = 0

    def world(self) -> TalkingConfig:
        return TalkingConfig(frames=self.model.frames, audio_dim=self.model.audio_dim)

    def spec(self, run: str) -> RunSpec:
        return getattr(self, run)


def training_batch(config: DreamTalkTrainConfig, run: str, step: int):
    """The seeded batch of ``run`` at ``step`` (and a generator for the run's own random numbers)."""
    s = seeds.DREAMTALK_DATA + _RUN_INDEX[run] * 1_000_000 + config.seed * 100_000 + step
    return make_talking(config.spec(run).batch, s, config.world()), torch.Generator().manual_seed(
        s + seeds.NOISE_SUBSTREAM
    )


def build(run: str, config: DreamTalkTrainConfig) -> torch.nn.Module:
    m = config.model
    return {
        "sync": lambda: SyncScorer(m.audio_dim),
        "emotion": lambda: EmotionClassifier(m.coeff_dim, m.frames),
        "emodiff": lambda: EmoDiff(m),
        "lstm": lambda: LSTMRegressor(m),
        "refiner": lambda: LipRefiner(m),
    }[run]()


def loss_function(run: str, config: DreamTalkTrainConfig):
    """``loss_fn(model, step, device)`` for ``run``."""

    def loss_fn(model, step: int, dev: torch.device) -> torch.Tensor:
        batch, g = training_batch(config, run, step)
        if run == "sync":
            return model.loss(batch.audio.to(dev), batch.coeffs[..., MOUTH_DIMS].to(dev))
        if run == "emotion":
            return torch.nn.functional.cross_entropy(model(batch.coeffs.to(dev)), batch.emotion.to(dev))
        if run == "emodiff":
            return emodiff_loss(model, batch, g)
        a, s = batch.audio.to(dev), batch.style.to(dev)
        target = model.normaliser.norm(batch.coeffs.to(dev))
        if run == "lstm":
            return torch.nn.functional.mse_loss(model.forward_normalised(a, batch.initial.to(dev), s), target)
        return torch.nn.functional.mse_loss(model.forward_normalised(a, s), target[..., MOUTH_DIMS])

    return loss_fn


def train_run(
    run: str,
    config: DreamTalkTrainConfig,
    *,
    run_dir: Path | None = None,
    ship: bool = True,
    resume: bool = False,
    max_minutes: float | None = None,
    device: str = "auto",
    progress: bool = True,
    on_step=None,
) -> tuple[torch.nn.Module, dict]:
    """Train (or continue) one run; shipped as ``data/dreamtalk_<run>`` when complete and ``ship``."""
    if run not in RUNS:
        raise ValueError(f"run must be one of {RUNS}, got {run!r}")
    spec = config.spec(run)
    model = seeded_init(config.seed * 10 + _RUN_INDEX[run], lambda: build(run, config))
    return train_and_ship(
        model,
        loss_function(run, config),
        target="dreamtalk",
        checkpoint=CHECKPOINTS[run],
        config=config.to_dict() | {"run": run},
        total_steps=spec.steps,
        lr=spec.lr,
        run_dir=run_dir or Path("runs/dreamtalk") / run,
        seed=config.seed,
        ship=ship,
        ship_ema=run == "emodiff",
        warmup=spec.warmup,
        resume=resume,
        max_minutes=max_minutes,
        device=device,
        progress=progress,
        on_step=on_step,
    )


def cli_train(options) -> dict:
    """All five runs in order (``--steps`` overrides every run's steps, for smoke tests)."""
    from dataclasses import replace

    config = DreamTalkTrainConfig(seed=options.seed)
    if options.steps:
        config = replace(config, **{r: replace(config.spec(r), steps=options.steps) for r in RUNS})
    deadline = None if options.max_minutes is None else time.time() + 60 * options.max_minutes
    summary = {}
    for run in RUNS:
        left = None if deadline is None else max(0.01, (deadline - time.time()) / 60)
        resume = options.resume and (Path("runs/dreamtalk") / run / "state.json").exists()
        _, s = train_run(run, config, resume=resume, max_minutes=left, device=options.device)
        summary[run] = s
        if not s["finished"]:
            return summary | {"stopped": f"out of --max-minutes while training {run}; continue with --resume"}
    return summary


def load_models(device: str | torch.device = "cpu") -> dict[str, torch.nn.Module]:
    """The five shipped networks (hash-verified; eval mode, frozen), by run name."""
    out = {}
    for run in RUNS:
        state, entry = checkpoints.load_checkpoint(CHECKPOINTS[run])
        config = DreamTalkTrainConfig.from_dict({k: v for k, v in entry["config"].items() if k != "run"})
        model = build(run, config)
        model.load_state_dict(state)
        out[run] = model.to(device).eval().requires_grad_(False)
    return out


def quick_train(run: str, steps: int = 60, seed: int = 0, progress: bool = False) -> tuple[torch.nn.Module, dict]:
    """A short live run of ``run``'s own training code (the notebook's demo; nothing is written to ``data/``)."""
    from dataclasses import replace

    config = DreamTalkTrainConfig(seed=seed)
    config = replace(config, **{run: replace(config.spec(run), steps=steps, warmup=min(20, steps))})

    def one(config, run_dir, **options):
        return train_run(run, config, run_dir=run_dir, **options)

    return quick_run(one, config, progress=progress, device="cpu")


def get_models(progress: bool = False) -> tuple[dict, str]:
    """The shipped networks, or (without checkpoints) short runs of the same training code — and which it was."""
    if all(checkpoints.checkpoint_available(c) for c in CHECKPOINTS.values()):
        return load_models(), "shipped checkpoints"
    out = {run: quick_train(run, steps=80, progress=progress)[0] for run in RUNS}
    return out, "trained now for 80 steps each (no shipped checkpoints found): expect weak models"


__all__ = [
    "CHECKPOINTS",
    "RUNS",
    "DreamTalkTrainConfig",
    "RunSpec",
    "build",
    "cli_train",
    "get_models",
    "load_models",
    "quick_train",
    "train_run",
    "training_batch",
]
