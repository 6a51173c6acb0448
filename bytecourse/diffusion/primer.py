"""Chapter 00: the caption-conditioned Shapes image model (DDPM training, DDIM/DDPM sampling, CFG).

``python -m bytecourse train primer`` trains it (resumable, ≤45 min per command on a 2-core CPU) and ships
the EMA weights as ``data/primer_unet.safetensors``; ``python -m bytecourse eval primer`` computes the
chapter's tables. Later chapters load the same model through :func:`load_primer_model`.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import checkpoints
from ..worlds import ShapesConfig, make_shapes
from .sampling import to_model_space
from .schedule import make_train_scheduler
from .trainer import train_loop
from .training import diffusion_loss
from .unet import ImageDenoiser, UNetConfig

CHECKPOINT = "primer_unet"


@dataclass
class PrimerConfig:
    """Toy defaults (the shipped run). More objects are rarer so one-object captions are learnt first."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    object_probs: tuple[float, ...] = (0.5, 0.3, 0.2)
    steps: int = 7000
    batch: int = 64
    lr: float = 6e-4
    warmup: int = 200
    ema_decay: float = 0.999
    p_uncond: float = 0.1
    seed: int = 0

    def world(self) -> ShapesConfig:
        return ShapesConfig(size=self.unet.image_size, object_probs=self.object_probs, caption_length=self.unet.caption_length)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet"] = self.unet.to_dict()
        return d


def primer_batch_loss(config: PrimerConfig, scheduler):
    """``loss_fn(model, step, device)`` for :func:`train_loop`: a fresh Shapes batch per step, seeded by
    (seed, step), so the data stream is the same however the run is split into stages."""
    world = config.world()

    def loss_fn(model, step: int, device: torch.device) -> torch.Tensor:
        data_seed = config.seed * 1_000_003 + step
        batch = make_shapes(config.batch, data_seed, world)
        g = torch.Generator().manual_seed(data_seed + 7)
        x0 = to_model_space(batch.images).to(device)
        return diffusion_loss(model, x0, batch.tokens.to(device), scheduler, g, config.p_uncond)

    return loss_fn


def train_primer(
    config: PrimerConfig,
    *,
    device: str = "auto",
    run_dir: Path = Path("runs/primer"),
    resume: bool = False,
    max_minutes: float | None = None,
    ship: bool = True,
    progress: bool = True,
) -> tuple[ImageDenoiser, dict]:
    """Train (or continue) the primer model; when the schedule completes and ``ship``, write the EMA
    weights and the manifest entry. Returns the EMA model and a summary dict."""
    commit = checkpoints.git_commit()  # the code that starts the run is the code that trains it
    torch.manual_seed(config.seed)  # parameter initialisation
    model = ImageDenoiser(config.unet)
    scheduler = make_train_scheduler()
    ema, state, acc = train_loop(
        model, primer_batch_loss(config, scheduler), total_steps=config.steps, lr=config.lr,
        run_dir=run_dir, config=config.to_dict(), warmup=config.warmup, ema_decay=config.ema_decay,
        resume=resume, max_minutes=max_minutes, device=device, progress=progress,
    )
    summary = {"step": state.step, "total_steps": config.steps, "wall_time_s": round(state.elapsed_s, 1),
               "stages": state.stages, "final_loss": state.last_loss, "device": str(acc.device)}
    if ship and state.step >= config.steps and acc.is_main_process:
        checkpoints.save_checkpoint(CHECKPOINT, ema.model.state_dict(), {
            "chapter": "primer",
            "config": config.to_dict(),
            "command": "python -m bytecourse train primer" + _cli_suffix(),
            "seed": config.seed,
            "git_commit": commit,
            "device": _device_description(acc.device),
            "wall_time_s": round(state.elapsed_s, 1),
            "stages": state.stages,
            "train_metrics": {"final_loss": round(state.last_loss, 5), "steps": state.step},
            "parameters": sum(p.numel() for p in ema.model.parameters()),
        })
    return ema.model, summary


def _cli_suffix() -> str:
    args = [a for a in sys.argv[1:] if a not in ("train", "primer")]
    keep, skip = [], False
    for a in args:  # the resume flags describe how the run was split, not what it computes
        if skip:
            skip = False
            continue
        if a == "--max-minutes":
            skip = True
            continue
        if a == "--resume" or a.startswith("--max-minutes="):
            continue
        keep.append(a)
    return (" " + shlex.join(keep)) if keep else ""


def _device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    import os

    return f"{device.type} ({os.cpu_count()} cores, torch {torch.__version__})"


def load_primer_model(device: str | torch.device = "cpu") -> tuple[ImageDenoiser, dict]:
    """The shipped primer model (hash-verified) and its manifest entry."""
    state, entry = checkpoints.load_checkpoint(CHECKPOINT)
    model = ImageDenoiser(UNetConfig.from_dict(entry["config"]["unet"]))
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False), entry


def quick_train_primer(steps: int = 150, seed: int = 0, device: str = "auto", progress: bool = True) -> ImageDenoiser:
    """A short live run of the same training code (the notebook's *Train* section and its fallback when the
    shipped checkpoint is missing). Nothing is written to ``data/``."""
    import tempfile

    config = PrimerConfig(steps=steps, seed=seed, warmup=min(50, steps))
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = train_primer(config, device=device, run_dir=Path(tmp), ship=False, progress=progress)
    model.train_seconds = time.time() - t0  # type: ignore[attr-defined]
    return model.eval()


def cli_train(args) -> dict:
    config = PrimerConfig(seed=args.seed)
    if args.steps is not None:
        config.steps = args.steps
    _, summary = train_primer(config, device=args.device, resume=args.resume, max_minutes=args.max_minutes)
    return summary
