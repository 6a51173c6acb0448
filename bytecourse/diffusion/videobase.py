"""The shared base video model: a caption-conditioned video DDPM on the Motion world (8 frames, 32×32).

``python -m bytecourse train video`` trains it (resumable stages of ≤45 min on a 2-core CPU: pass
``--max-minutes 44`` and then ``--resume``) and ships the EMA weights as ``data/video_unet.safetensors``.
Video chapters (Boximator first) load it frozen through :func:`load_video_model`. The architecture is
:class:`~bytecourse.diffusion.video.VideoDenoiser`: per-frame convolutions, spatial self-attention, caption
cross-attention and temporal attention in every transformer block, as in ModelScope/AnimateDiff-style
video UNets.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import checkpoints
from ..worlds.motion import MotionConfig, make_motion
from .sampling import to_model_space
from .schedule import make_train_scheduler
from .trainer import train_loop
from .training import diffusion_loss
from .video import VideoDenoiser, VideoUNetConfig

CHECKPOINT = "video_unet"


@dataclass
class VideoBaseConfig:
    """Toy defaults (the shipped run): one or two objects per clip, every Motion kind, plain background."""

    unet: VideoUNetConfig = field(default_factory=VideoUNetConfig)
    max_objects: int = 2
    object_probs: tuple[float, ...] = (0.6, 0.4)
    steps: int = 4000
    batch: int = 16
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    p_uncond: float = 0.1
    seed: int = 0

    def world(self) -> MotionConfig:
        return MotionConfig(frames=self.unet.frames, size=self.unet.image_size, max_objects=self.max_objects,
                            object_probs=self.object_probs, caption_length=self.unet.caption_length)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet"] = self.unet.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VideoBaseConfig:
        d = dict(d)
        d["unet"] = VideoUNetConfig.from_dict(d["unet"])
        d["object_probs"] = tuple(d["object_probs"])
        return cls(**d)


def video_batch_loss(config: VideoBaseConfig, scheduler):
    """``loss_fn(model, step, device)``: a fresh Motion batch per step, seeded by (seed, step)."""
    world = config.world()

    def loss_fn(model, step: int, device: torch.device) -> torch.Tensor:
        data_seed = config.seed * 1_000_003 + step
        batch = make_motion(config.batch, data_seed, world)
        g = torch.Generator().manual_seed(data_seed + 7)
        x0 = to_model_space(batch.videos).to(device)
        return diffusion_loss(model, x0, batch.tokens.to(device), scheduler, g, config.p_uncond)

    return loss_fn


def train_video_model(
    config: VideoBaseConfig, *, device: str = "auto", run_dir: Path = Path("runs/video"), resume: bool = False,
    max_minutes: float | None = None, ship: bool = True, progress: bool = True, on_step=None,
) -> tuple[VideoDenoiser, dict]:
    """Train (or continue) the base video model; ship the EMA weights when the schedule completes."""
    commit = checkpoints.git_commit()
    torch.manual_seed(config.seed)
    model = VideoDenoiser(config.unet)
    scheduler = make_train_scheduler()
    ema, state, acc = train_loop(
        model, video_batch_loss(config, scheduler), total_steps=config.steps, lr=config.lr, run_dir=run_dir,
        config=config.to_dict(), warmup=config.warmup, ema_decay=config.ema_decay, resume=resume,
        max_minutes=max_minutes, device=device, progress=progress, on_step=on_step,
    )
    summary = {"step": state.step, "total_steps": config.steps, "wall_time_s": round(state.elapsed_s, 1),
               "stages": state.stages, "final_loss": state.last_loss, "device": str(acc.device)}
    if ship and state.step >= config.steps and acc.is_main_process:
        checkpoints.save_checkpoint(CHECKPOINT, ema.model.state_dict(), {
            "chapter": "video",
            "config": config.to_dict(),
            "command": "python -m bytecourse train video" + checkpoints.train_command_suffix("video"),
            "seed": config.seed,
            "git_commit": commit,
            "device": checkpoints.device_description(acc.device),
            "wall_time_s": round(state.elapsed_s, 1),
            "stages": state.stages,
            "stage_commands": state.commands,
            "train_metrics": {"final_loss": round(state.last_loss, 5), "steps": state.step},
            "parameters": sum(p.numel() for p in ema.model.parameters()),
        })
    return ema.model, summary


def load_video_model(device: str | torch.device = "cpu") -> tuple[VideoDenoiser, VideoBaseConfig]:
    """The shipped base video model (hash-verified, frozen, eval mode) and its training config."""
    state, entry = checkpoints.load_checkpoint(CHECKPOINT)
    config = VideoBaseConfig.from_dict(entry["config"])
    model = VideoDenoiser(config.unet)
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False), config


def quick_train_video_model(steps: int = 60, seed: int = 0, device: str = "auto", progress: bool = True) -> tuple[VideoDenoiser, dict]:
    """A short live run of the same training code (a fallback when the checkpoint is missing)."""
    import tempfile

    config = VideoBaseConfig(steps=steps, seed=seed, warmup=min(50, steps), batch=8)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        model, summary = train_video_model(config, device=device, run_dir=Path(tmp), ship=False, progress=progress)
    return model.eval().requires_grad_(False), summary | {"seconds": time.time() - t0}


def cli_train(args) -> dict:
    config = VideoBaseConfig(seed=args.seed)
    if args.steps is not None:
        config.steps = args.steps
    _, summary = train_video_model(config, device=args.device, resume=args.resume, max_minutes=args.max_minutes)
    return summary


def cli_eval(args) -> dict:
    """Oracle realism and caption accuracy of the base model's videos (frame-wise), per seed."""
    from ..device import default_device
    from ..evaluation import summarise
    from ..oracle import caption_accuracy, detect_objects, realism
    from .sampling import ddim_sample, initial_noise, to_image_space

    device = default_device(args.device)
    model, config = load_video_model(device)
    per_seed = []
    for seed in args.seeds:
        batch = make_motion(16, 20_000 + seed, config.world())
        noise = initial_noise(tuple(batch.videos.shape), 20_000 + seed, device)
        x = to_image_space(ddim_sample(model, noise, batch.tokens.to(device), make_train_scheduler(), steps=20, cfg_scale=2.0))
        frames = x.flatten(0, 1).float().cpu()
        caps = [c for c in batch.captions for _ in range(config.unet.frames)]
        per_seed.append({**caption_accuracy(caps, detect_objects(frames)), "realism": float(realism(frames).mean())})
    return {"samples": summarise(per_seed), "seeds": list(args.seeds)}
