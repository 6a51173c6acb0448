"""Chapter 00: the caption-conditioned Shapes image model (DDPM training, DDIM/DDPM sampling, CFG).

``python -m bytecourse train primer`` trains it (resumable, ≤45 min per command on a 2-core CPU) and ships
the EMA weights as ``data/primer_unet.safetensors``; ``python -m bytecourse eval primer`` computes the
chapter's tables. Later chapters load the same model through :func:`load_primer_model`.
"""

from __future__ import annotations

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
    on_step=None,
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
        resume=resume, max_minutes=max_minutes, device=device, progress=progress, on_step=on_step,
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
    return checkpoints.train_command_suffix("primer")


def _device_description(device: torch.device) -> str:
    return checkpoints.device_description(device)


def load_primer_model(device: str | torch.device = "cpu") -> tuple[ImageDenoiser, dict]:
    """The shipped primer model (hash-verified) and its manifest entry."""
    state, entry = checkpoints.load_checkpoint(CHECKPOINT)
    model = ImageDenoiser(UNetConfig.from_dict(entry["config"]["unet"]))
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False), entry


def quick_train_primer(
    steps: int = 150, seed: int = 0, device: str = "auto", progress: bool = True
) -> tuple[ImageDenoiser, dict]:
    """A short live run of the same training code (the notebook's *Train* section and its fallback when the
    shipped checkpoint is missing). Nothing is written to ``data/``. Returns the EMA model and a summary
    with the per-step ``losses`` and ``seconds``."""
    import tempfile

    config = PrimerConfig(steps=steps, seed=seed, warmup=min(50, steps))
    losses: list[float] = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        model, summary = train_primer(config, device=device, run_dir=Path(tmp), ship=False, progress=progress,
                                      on_step=lambda step, loss: losses.append(loss))
    summary |= {"losses": losses, "seconds": time.time() - t0}
    return model.eval(), summary


def stored_tables() -> dict | None:
    """The full tables that ``python -m bytecourse eval primer`` stored in the manifest (None if absent)."""
    if not checkpoints.checkpoint_available(CHECKPOINT):
        return None
    tables = checkpoints.manifest_entry(CHECKPOINT).get("tables") or None
    return tables


def cli_train(args) -> dict:
    config = PrimerConfig(seed=args.seed)
    if args.steps is not None:
        config.steps = args.steps
    _, summary = train_primer(config, device=args.device, resume=args.resume, max_minutes=args.max_minutes)
    return summary


# --------------------------------------------------------------------------------------------------------
# Evaluation: oracle accuracy and realism against the number of DDIM steps and the CFG scale.

EVAL_SEED_OFFSET = 10_000  # evaluation captions/noise never coincide with training batches
EVAL_SAMPLES = 64
DEFAULT_CFG = 2.0  # in the plateau of the CFG table (1.5–2); stronger guidance costs this model accuracy (see the notebook)
DEFAULT_STEPS = 20
STEP_GRID = (5, 10, 20, 50)
CFG_GRID = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)


def sample_captions(
    model: ImageDenoiser, captions: list[str], *, steps: int = DEFAULT_STEPS, cfg_scale: float = DEFAULT_CFG,
    seed: int = 0, sampler: str = "ddim", progress: bool = False,
) -> torch.Tensor:
    """Images ``(B,3,H,W)`` in [0, 1] for captions, from seeded noise. ``sampler``: ``"ddim"`` (``steps``
    steps) or ``"ddpm"`` (all 1000 ancestral steps)."""
    from .. import text
    from ..validation import check_choice, check_strings
    from .sampling import ddim_sample, ddpm_sample, initial_noise, to_image_space

    check_choice("sampler", sampler, ("ddim", "ddpm"))
    captions = check_strings("captions", captions)
    cfg = model.config
    device = next(model.parameters()).device
    tokens = text.encode(captions, cfg.caption_length).to(device)
    noise = initial_noise((len(captions), cfg.channels, cfg.image_size, cfg.image_size), seed, device)
    sched = make_train_scheduler()
    from ..device import autocast

    with autocast(device):
        if sampler == "ddim":
            x = ddim_sample(model, noise, tokens, sched, steps=steps, cfg_scale=cfg_scale, seed=seed, progress=progress)
        else:
            x = ddpm_sample(model, noise, tokens, sched, cfg_scale=cfg_scale, seed=seed, progress=progress)
    return to_image_space(x.float())


def measure(images: torch.Tensor, captions: list[str]) -> dict[str, float]:
    """Oracle metrics of samples against their captions: colour, shape, exact-set accuracy and realism."""
    from ..oracle import caption_accuracy, detect_objects, realism

    acc = caption_accuracy(captions, detect_objects(images))
    return {**acc, "realism": float(realism(images).mean())}


def eval_captions(seed: int, num_objects: int, n: int = EVAL_SAMPLES, image_size: int = 32) -> list[str]:
    world = ShapesConfig(size=image_size)
    return make_shapes(n, EVAL_SEED_OFFSET + seed, world, num_objects=num_objects).captions


def eval_rows(
    model: ImageDenoiser, settings: list[dict], seeds: list[int], n: int = EVAL_SAMPLES, progress: bool = True
) -> dict:
    """A table: for each setting (``name``, ``num_objects``, ``steps``, ``cfg``, ``sampler``) and seed, sample
    ``n`` images for that seed's captions and measure them."""
    from tqdm.auto import tqdm

    from ..evaluation import summarise

    rows = []
    jobs = [(s, seed) for s in settings for seed in seeds]
    results: dict[str, list] = {}
    for s, seed in tqdm(jobs, disable=not progress, desc="eval"):
        caps = eval_captions(seed, s["num_objects"], n, model.config.image_size)
        imgs = sample_captions(model, caps, steps=s["steps"], cfg_scale=s["cfg"], seed=EVAL_SEED_OFFSET + seed, sampler=s["sampler"])
        results.setdefault(s["name"], []).append(measure(imgs, caps))
    for s in settings:
        rows.append({"setting": s["name"], "config": s, "metrics": summarise(results[s["name"]])})
    return {"rows": rows, "seeds": list(seeds), "samples_per_seed": n}


def steps_settings(include_ddpm: bool = True, cfg: float = DEFAULT_CFG) -> list[dict]:
    rows = [dict(name=f"DDIM {k} steps", num_objects=1, steps=k, cfg=cfg, sampler="ddim") for k in STEP_GRID]
    if include_ddpm:
        rows.append(dict(name="DDPM 1000 steps", num_objects=1, steps=1000, cfg=cfg, sampler="ddpm"))
    return rows


def cfg_settings() -> list[dict]:
    return [dict(name=f"CFG {w:g}", num_objects=1, steps=DEFAULT_STEPS, cfg=w, sampler="ddim") for w in CFG_GRID]


def objects_settings() -> list[dict]:
    return [dict(name=f"{k} object(s)", num_objects=k, steps=DEFAULT_STEPS, cfg=DEFAULT_CFG, sampler="ddim") for k in (1, 2, 3)]


def evaluate_primer(model: ImageDenoiser, seeds: list[int], progress: bool = True) -> dict:
    """The chapter's full tables (what ``python -m bytecourse eval primer`` stores in the manifest)."""
    return {
        "steps": {**eval_rows(model, steps_settings(), seeds, progress=progress), "setting_name": f"sampler (1 object, CFG {DEFAULT_CFG:g})"},
        "steps_unguided": {**eval_rows(model, steps_settings(include_ddpm=False, cfg=1.0), seeds, progress=progress),
                           "setting_name": "sampler (1 object, CFG 1: no guidance)"},
        "cfg": {**eval_rows(model, cfg_settings(), seeds, progress=progress), "setting_name": f"CFG scale (1 object, DDIM {DEFAULT_STEPS})"},
        "objects": {**eval_rows(model, objects_settings(), seeds, progress=progress), "setting_name": f"caption (DDIM {DEFAULT_STEPS}, CFG {DEFAULT_CFG:g})"},
        "world": {"oracle_on_world_images": world_sanity(seeds)},
    }


def world_sanity(seeds: list[int], n: int = EVAL_SAMPLES) -> dict:
    """The oracle on the world's own images for the same captions — the ceiling every row is read against."""
    from ..evaluation import summarise

    per_seed = []
    for seed in seeds:
        batch = make_shapes(n, EVAL_SEED_OFFSET + seed, ShapesConfig(), num_objects=1)
        per_seed.append(measure(batch.images, batch.captions))
    return summarise(per_seed)


def cli_eval(args) -> dict:
    from ..device import default_device

    model, _ = load_primer_model(default_device(args.device))
    return evaluate_primer(model, list(args.seeds))


# --------------------------------------------------------------------------------------------------------
# The chapter's widget: CFG scale and DDIM steps → samples with the oracle's verdict.


def sample_with_verdicts(model: ImageDenoiser, caption: str, cfg_scale: float, steps: int, seed: int = 0, n: int = 8) -> dict:
    """Pure function behind the widget: ``n`` samples of one caption and the oracle's verdict on each."""
    from ..oracle import detect_objects, realism, score_caption
    from ..validation import check_int

    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"caption must be a non-empty string, got {caption!r}")
    captions = [caption] * check_int("n", n, 1)
    images = sample_captions(model, captions, steps=steps, cfg_scale=cfg_scale, seed=seed)
    dets = detect_objects(images)
    scores = [score_caption(caption, d) for d in dets]
    real = realism(images)
    return {"images": images, "detections": dets, "scores": scores, "realism": real,
            "caption": caption, "cfg_scale": cfg_scale, "steps": steps, "nfe": steps * (1 if cfg_scale == 1.0 else 2),
            "summary": {"colour": sum(s.colour for s in scores) / n, "shape": sum(s.shape for s in scores) / n,
                        "exact": sum(s.exact for s in scores) / n, "realism": float(real.mean())}}


def render_verdicts(result: dict) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display

    from ..text import COLOUR_NAMES, SHAPE_NAMES
    from ..viz import image_grid

    titles = []
    for s, d in zip(result["scores"], result["detections"]):
        found = ", ".join(f"{COLOUR_NAMES[o.colour]} {SHAPE_NAMES[o.shape]}" for o in d if o.well_formed) or "nothing"
        titles.append(("✓ " if s.exact else "✗ ") + found)
    boxes = [[o.box for o in d] for d in result["detections"]]
    s = result["summary"]
    print(f"CFG {result['cfg_scale']:g} · {result['steps']} DDIM steps · {result['nfe']} network evaluations → "
          f"colour {s['colour']:.2f}, shape {s['shape']:.2f}, exact {s['exact']:.2f}, realism {s['realism']:.3f}")
    fig = image_grid(result["images"], titles, ncols=8, boxes=boxes, suptitle=(
        f"“{result['caption']}” — CFG {result['cfg_scale']:g}, {result['steps']} DDIM steps "
        f"({result['nfe']} network evaluations): colour {s['colour']:.2f}, shape {s['shape']:.2f}, "
        f"exact {s['exact']:.2f}, realism {s['realism']:.3f}"))
    display(fig)  # into the widget's Output; closing it keeps the inline backend from drawing it twice
    plt.close(fig)


def primer_explorer(model: ImageDenoiser, n: int = 8):
    """The main widget of chapter 00 (a :class:`~bytecourse.widgets.FunctionView`)."""
    import ipywidgets as W

    from ..text import COLOUR_NAMES, SHAPE_NAMES
    from ..widgets import FunctionView

    captions = [f"a {c} {s}" for c in COLOUR_NAMES for s in SHAPE_NAMES] + ["a red circle and a blue square"]
    controls = {
        "caption": W.Dropdown(options=captions, value="a red circle", description="caption"),
        "cfg_scale": W.FloatSlider(value=DEFAULT_CFG, min=0.0, max=10.0, step=0.5, description="CFG scale", continuous_update=False),
        "steps": W.SelectionSlider(options=[2, 5, 10, 20, 50], value=DEFAULT_STEPS, description="DDIM steps", continuous_update=False),
        "seed": W.IntSlider(value=0, min=0, max=20, description="seed", continuous_update=False),
    }
    return FunctionView(controls, lambda **v: sample_with_verdicts(model, n=n, **v), render_verdicts,
                        title="Classifier-free guidance explorer")
