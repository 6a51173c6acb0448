"""The course's video model: the primer's image model inflated with motion modules, trained on the Motion world.

``python -m bytecourse train video --stage 1`` trains the motion modules (and the whole-caption encoder) with
every spatial weight frozen, as AnimateDiff trains its motion modules on a frozen SD; ``--stage 2`` continues
from stage 1 with low-rank (LoRA) deltas on the spatial attention and image–video joint training (single
Shapes images as one-frame clips, as MagicAnimate and MagicVideo-V2 do). Stage 2 also adds a spatio-temporal
attention to the 8×8 and 4×4 motion modules (see :mod:`~bytecourse.diffusion.inflate`) and draws half its noise
levels from t ≥ 700 with the v weighting's cap raised to 1000 (x̂₀-error weight ≈ 1 up to t ≈ 980): a clip's
direction is decided in the first DDIM steps, where the capped weighting gave a clean-clip error almost no weight
(0.12 at t = 950). Each stage is one resumable command
of ≤45 min on a 2-core CPU (``--max-minutes``, ``--resume``). What ships, ``data/video_motion.safetensors``,
holds only what differs from the primer's weights; its manifest entry records the primer checkpoint's sha256
as its parent.

Both stages train on the ε-MSE weighted as the v-prediction loss (:func:`~bytecourse.diffusion.training.loss_weights`):
plain L_simple weighs a clean-clip error by SNR_t, nearly nothing at the high-noise levels where motion is decided,
and measured after 1,500 steps on it the motion modules had changed ε by 0.26 % (the v-weighted run: 0.41 %, with
twice the high-noise loss improvement).

``python -m bytecourse eval video`` computes the comparison table (frame-wise oracle accuracy and realism,
motion-direction accuracy, identity consistency, background flicker, training wall time) for the image model
applied frame by frame, the inflated model, the old from-scratch video model and the real clips.

``--variant scratch`` still trains the old from-scratch :class:`~bytecourse.diffusion.video.VideoDenoiser`
(:mod:`bytecourse.diffusion.videobase`), the comparison row; its weights are no longer shipped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import checkpoints, seeds
from ..configs import JSONConfig
from ..trainer import quick_run, seeded_init, train_and_ship
from ..worlds import ShapesConfig, make_shapes
from ..worlds.motion import MotionConfig, make_motion
from .image_model import CHECKPOINT as PRIMER_CHECKPOINT
from .image_model import load_image_model
from .inflate import InflatedVideoDenoiser, InflationConfig
from .sampling import to_model_space
from .schedule import make_train_scheduler
from .training import seeded_diffusion_loss

CHECKPOINT = "video_motion"


@dataclass
class VideoStage:
    """One training stage: ``lora_rank`` > 0 tunes the spatial attention through LoRA; ``p_image`` is the
    fraction of steps that train on single Shapes images (one-frame clips) instead of Motion clips;
    ``spatiotemporal_points`` are motion modules that gain a (zero-initialised) spatio-temporal attention from
    this stage on; ``high_noise = (p, t_from)`` draws a share p of the levels from [t_from, T) (see
    :func:`~bytecourse.diffusion.training.diffusion_loss`); ``max_loss_weight`` overrides the config's cap;
    ``x0_head`` (``"conv"`` or ``"attention"``) adds the blended clean-clip head
    (:class:`~bytecourse.diffusion.inflate.InflationConfig`) from this stage on; ``trainable`` (parameter-name
    prefixes, e.g. ``("x0_head.", "x0_gate.")``) trains only those, everything else kept as the earlier stages left it
    (empty: every weight outside the frozen image model)."""

    name: str
    steps: int
    lr: float
    lora_rank: int = 0
    p_image: float = 0.0
    spatiotemporal_points: tuple[str, ...] = ()
    high_noise: tuple[float, int] = (0.0, 0)
    max_loss_weight: float | None = None
    x0_head: str = ""
    trainable: tuple[str, ...] = ()


@dataclass
class InflatedVideoConfig(JSONConfig):
    """Toy defaults (the shipped run): one or two objects per clip, every Motion kind, plain background."""

    inflation: InflationConfig = field(default_factory=InflationConfig)
    stages: tuple[VideoStage, ...] = (
        VideoStage("stage 1: motion modules, spatial layers frozen", steps=5000, lr=5e-4),
        VideoStage(
            "stage 2: + spatio-temporal attention at 8×8 and 4×4, levels biased to high noise, spatial LoRA, "
            "image-video joint training",
            steps=3500,
            lr=3e-4,
            lora_rank=4,
            p_image=0.1,
            spatiotemporal_points=("down2", "down4", "mid", "up1", "up4"),
            high_noise=(0.5, 700),
            max_loss_weight=1000.0,
        ),
    )
    max_objects: int = 2
    object_probs: tuple[float, ...] = (0.6, 0.4)
    batch: int = 8
    loss_weighting: str = "v"  # see training.loss_weights: L_simple barely rewards motion (measured, see below)
    max_loss_weight: float = 20.0
    warmup: int = 200
    ema_decay: float = 0.999
    p_uncond: float = 0.1
    seed: int = 0

    def world(self) -> MotionConfig:
        return MotionConfig(
            frames=self.inflation.frames,
            size=32,
            max_objects=self.max_objects,
            object_probs=self.object_probs,
            caption_length=self.inflation.caption_length,
        )

    def inflation_for(self, stage: int) -> InflationConfig:
        """The inflation a stage trains (LoRA exists from the first stage that asks for it on)."""
        from dataclasses import replace

        rank = max((s.lora_rank for s in self.stages[:stage]), default=0)
        points = tuple(dict.fromkeys(p for s in self.stages[:stage] for p in s.spatiotemporal_points))
        return replace(
            self.inflation,
            lora_rank=rank,
            x0_head=self.inflation.x0_head or next((s.x0_head for s in self.stages[:stage] if s.x0_head), ""),
            spatiotemporal_points=tuple(dict.fromkeys(self.inflation.spatiotemporal_points + points)),
        )


def build_video_model(
    config: InflatedVideoConfig, stage: int, device: str | torch.device = "cpu"
) -> InflatedVideoDenoiser:
    """The primer's shipped image model, inflated as ``stage`` trains it (motion modules fresh)."""
    image_model, _ = load_image_model(device)
    return InflatedVideoDenoiser(image_model, config.inflation_for(stage)).to(device)


def video_stage_loss(config: InflatedVideoConfig, stage: int, scheduler):
    """``loss_fn(model, step, device)``: a fresh seeded batch per step — Motion clips, or (with probability
    ``p_image``) single Shapes images as one-frame clips with their Shapes captions."""
    spec = config.stages[stage - 1]
    world = config.world()
    images = ShapesConfig(
        size=32,
        max_objects=config.max_objects,
        object_probs=config.object_probs,
        caption_length=config.inflation.caption_length,
    )

    def draw(data_seed: int, generator: torch.Generator):
        if spec.p_image > 0 and float(torch.rand((), generator=generator)) < spec.p_image:
            batch = make_shapes(config.batch * config.inflation.frames, data_seed, images)
            return to_model_space(batch.images)[:, None], batch.tokens
        batch = make_motion(config.batch, data_seed, world)
        return to_model_space(batch.videos), batch.tokens

    return seeded_diffusion_loss(
        draw,
        scheduler,
        seed=config.seed,
        p_uncond=config.p_uncond,
        stream=stage * seeds.STAGE_STRIDE,
        weighting=config.loss_weighting,
        max_weight=spec.max_loss_weight or config.max_loss_weight,
        high_noise=tuple(spec.high_noise),
    )


def _stage_run_config(config: InflatedVideoConfig, stage: int) -> dict:
    """What a stage's run depends on (checked on ``--resume``): the shared fields and stages 1..k — not the
    specs of later stages, which may still be changed while this one runs."""
    d = config.to_dict()
    d["stages"] = d["stages"][:stage]
    return d | {"stage": stage}


def _run_dir(root: Path, stage: int) -> Path:
    return root / f"stage{stage}"


def train_video_stage(
    config: InflatedVideoConfig,
    stage: int,
    *,
    device: str = "auto",
    run_root: Path = Path("runs/video_motion"),
    resume: bool = False,
    max_minutes: float | None = None,
    ship: bool = True,
    progress: bool = True,
    on_step=None,
) -> tuple[InflatedVideoDenoiser, dict]:
    """Train (or continue) one stage. Stage k > 1 starts from stage k−1's final EMA weights (its run
    directory). When the stage completes and ``ship``, the delta is written as ``data/video_motion`` with
    every finished stage's command, steps and wall time in its manifest entry."""
    if not 1 <= stage <= len(config.stages):
        raise ValueError(f"stage must be in 1..{len(config.stages)}, got {stage}")
    spec = config.stages[stage - 1]
    commit = checkpoints.git_commit()
    model = seeded_init(config.seed + stage, lambda: build_video_model(config, stage))  # what this stage adds
    history: list[dict] = []
    if stage > 1:
        ema, history = _previous_stage(config, stage, run_root)
        missing = set(model.state_dict()) - set(ema)
        added = (  # what this stage adds; the frozen spatial weights are the primer's (a shipped delta omits them)
            "spatial.",
            "lora.",
            "x0_head.",
            "x0_gate.",
            *(f"motion.{p}.{n}" for p in spec.spatiotemporal_points for n in ("attn_st.", "norm_st.")),
        )
        if any(not k.startswith(added) for k in missing):
            raise ValueError(f"stage {stage - 1}'s weights do not fit stage {stage}'s model")
        model.load_state_dict(ema, strict=False)
    model.spatial.requires_grad_(False)
    if spec.trainable:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(tuple(spec.trainable)))
    run_dir = _run_dir(run_root, stage)

    def entry(state) -> dict:
        """Called once the stage is complete: record it in the run's history, which the shipped entry carries."""
        record = {
            "stage": stage,
            "name": spec.name,
            "steps": spec.steps,
            "lr": spec.lr,
            "wall_time_s": round(state.elapsed_s, 1),
            "final_loss": round(state.last_loss, 5),
            "commands": state.commands,
            "git_commit": commit,
        }
        full = [h for h in history if h["stage"] < stage] + [record]
        meta = json.loads((run_dir / "state.json").read_text())
        (run_dir / "state.json").write_text(json.dumps(meta | {"history": full}, indent=2))
        parent = checkpoints.manifest_entry(PRIMER_CHECKPOINT)
        return {
            "earlier_stage_rows": _earlier_stage_rows(stage),
            "config": config.to_dict() | {"trained_stages": stage},
            "command": " && ".join(c for h in full for c in h["commands"]),
            "stage_history": full,
            "parent": {"checkpoint": PRIMER_CHECKPOINT, "sha256": parent["sha256"]},
            "wall_time_s": round(sum(h["wall_time_s"] for h in full), 1),
            "train_metrics": {"final_loss": round(state.last_loss, 5), "steps": sum(h["steps"] for h in full)},
        }

    trained, summary = train_and_ship(
        model,
        video_stage_loss(config, stage, make_train_scheduler()),
        target="video",
        checkpoint=CHECKPOINT,
        config=_stage_run_config(config, stage),
        total_steps=spec.steps,
        lr=spec.lr,
        run_dir=run_dir,
        seed=config.seed,
        ship=ship,
        state_dict=lambda m: m.delta_state_dict(),
        entry=entry,
        warmup=config.warmup,
        ema_decay=config.ema_decay,
        resume=resume,
        max_minutes=max_minutes,
        device=device,
        progress=progress,
        on_step=on_step,
    )
    return trained, summary | {"stage": stage}


def _previous_stage(config: InflatedVideoConfig, stage: int, run_root: Path) -> tuple[dict, list[dict]]:
    """Stage ``stage − 1``'s final EMA weights (what differs from the primer) and the run history: from its run
    directory, or — on a fresh clone, where ``runs/`` is empty — from the shipped checkpoint when that holds exactly
    stage ``stage − 1`` of this config (its fp16 weights: the stage starts from them as rounded)."""
    prev = _run_dir(run_root, stage - 1)
    meta = json.loads((prev / "state.json").read_text()) if (prev / "state.json").exists() else None
    if meta is not None and meta["state"]["step"] >= config.stages[stage - 2].steps:
        from safetensors.torch import load_file

        ema = {k[4:]: v for k, v in load_file(str(prev / "state.safetensors")).items() if k.startswith("ema.")}
        return ema, meta.get("history", [])
    manifest = checkpoints.read_manifest()["checkpoints"]
    if meta is None and CHECKPOINT in manifest:
        entry = manifest[CHECKPOINT]
        shipped = InflatedVideoConfig.from_dict({k: v for k, v in entry["config"].items() if k != "trained_stages"})
        same = json.dumps(_stage_run_config(shipped, stage - 1)) == json.dumps(_stage_run_config(config, stage - 1))
        if entry["config"].get("trained_stages") == stage - 1 and same:
            state, _ = checkpoints.load_checkpoint(CHECKPOINT)
            return {k: v.float() for k, v in state.items()}, list(entry.get("stage_history", []))
    raise ValueError(f"stage {stage} starts from a finished stage {stage - 1} in {prev}; run that first")


def _earlier_stage_rows(stage: int) -> list[dict]:
    """The evaluated rows of earlier stages' checkpoints, kept when a later stage replaces the shipped file
    (``eval video`` shows them beside the new model's row; each names the checkpoint sha256 it was computed on)."""
    if CHECKPOINT not in checkpoints.read_manifest()["checkpoints"]:
        return []
    entry = checkpoints.manifest_entry(CHECKPOINT)
    rows = list(entry.get("earlier_stage_rows", []))
    if entry["config"].get("trained_stages", stage) < stage:
        stored = checkpoints.read_manifest().get("tables", {}).get("video", {}).get("tables", {})
        for r in stored.get("models", {}).get("rows", []):
            if r.get("checkpoint_sha256") == entry["sha256"]:
                rows.append(
                    r
                    | {
                        "note": r["note"]
                        + f" (stored by an earlier `eval video` of checkpoint {entry['sha256'][:12]}…)"
                    }
                )
    return rows


def load_inflated_video_model(
    device: str | torch.device = "cpu",
) -> tuple[InflatedVideoDenoiser, InflatedVideoConfig, dict]:
    """The shipped inflated video model (primer + motion delta, both hash-verified; frozen, eval mode), its
    config and manifest entry. Raises if the primer on disk is not the parent the delta was trained on."""
    state, entry = checkpoints.load_checkpoint(CHECKPOINT)
    parent = checkpoints.manifest_entry(PRIMER_CHECKPOINT)
    if parent["sha256"] != entry["parent"]["sha256"]:
        raise checkpoints.CheckpointError(
            f"{CHECKPOINT} was trained on primer_unet {entry['parent']['sha256'][:12]}…, but primer_unet on disk is "
            f"{parent['sha256'][:12]}…; retrain it with `python -m bytecourse train video --stage 1` (then 2)"
        )
    config = InflatedVideoConfig.from_dict({k: v for k, v in entry["config"].items() if k != "trained_stages"})
    model = build_video_model(config, entry["config"]["trained_stages"], device)
    model.load_delta({k: v.to(device) for k, v in state.items()})
    return model.eval().requires_grad_(False), config, entry


def quick_train_video_model(steps: int = 40, seed: int = 0, device: str = "auto", progress: bool = True):
    """A short live run of stage 1's training code (the notebook's demo and its fallback without weights):
    :func:`~bytecourse.trainer.quick_run`."""
    config = InflatedVideoConfig(seed=seed, warmup=min(20, steps))
    config.stages = (VideoStage("live demo: motion modules", steps=steps, lr=5e-4),)

    def stage_1(config, run_dir, **options):
        return train_video_stage(config, 1, run_root=run_dir, **options)

    return quick_run(stage_1, config, device=device, progress=progress)


def cli_train(options) -> dict:
    if options.variant == "scratch":
        from . import videobase

        if options.stage is not None:
            raise ValueError("train video --variant scratch has one stage: drop --stage")
        return videobase.cli_train(options)
    config = InflatedVideoConfig(seed=options.seed)
    stage = options.stage or 1
    if options.steps is not None:
        config.stages = tuple(
            VideoStage(**{**asdict(s), "steps": options.steps}) if i == stage - 1 else s
            for i, s in enumerate(config.stages)
        )
    _, summary = train_video_stage(
        config, stage, device=options.device, resume=options.resume, max_minutes=options.max_minutes
    )
    return summary


__all__ = [
    "CHECKPOINT",
    "InflatedVideoConfig",
    "VideoStage",
    "build_video_model",
    "load_inflated_video_model",
    "quick_train_video_model",
    "train_video_stage",
    "video_stage_loss",
]
