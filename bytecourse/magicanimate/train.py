"""Chapter 05's training command: ``python -m bytecourse train magicanimate [--variant RUN]``.

Four resumable runs under ``runs/magicanimate/``, in this order (without ``--variant`` all of them, sharing one
``--max-minutes`` budget; each ships when it completes, fp16, as a delta on its parent):

1. ``base`` — the toy's Stable Diffusion: the primer's image model fine-tuned on single Puppet frames (null
   caption) through a low-rank delta on every conv and linear layer → ``magicanimate_base``.
2. ``appearance`` — the paper's **stage 1**: appearance encoder + pose ControlNet on single frames, the base
   frozen. Each sample reconstructs a frame from a reference of the same identity in another pose and the frame's
   IUV map; with probability ``p_self`` (the paper's τ₀, image data with its own pose) the reference is the frame
   itself; with probability ``p_drop`` the reference is dropped (CFG on appearance needs the unconditional model)
   → ``magicanimate_appearance``.
3. ``appearance_global`` — the same with the bank pooled to one token per block (the global-embedding ablation)
   → ``magicanimate_appearance_global``.
4. ``temporal`` — the paper's **stage 2**: motion modules only, on the ``appearance`` model, with image–video joint
   training: r ~ U(0, 1); r ≤ τ₁ reconstruct the reference itself; τ₁ < r ≤ τ₂ one other frame; else the whole
   clip → ``magicanimate_temporal``.

Every batch is drawn fresh from the Puppet world with a seed made of the run, the training seed and the step, so a
resumed run sees the data an uninterrupted one would.

Measured on the 2-core development machine (2026-12-05, each run alone unless said): ``base`` 2,500 steps in 14.5 min;
``appearance`` 2,400 steps in 26 min; ``temporal`` 2,000 steps in 12 min; ``appearance_global`` 2,400 steps in 30 min
(slowed by a test run beside it). Shipped: 0.72 + 1.16 + 1.01 + 1.16 MB = 3.86 MiB. What the bank carries, on
evaluation seed 0 (8 frames, DDIM 10, the ``appearance`` model without temporal modules): identity error 0.85 without
the bank (w = 0), 0.66 / 0.53 / 0.47 at appearance guidance w = 1 / 2 / 4, against 0.77 for copying the reference.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import checkpoints, seeds
from ..configs import JSONConfig
from ..diffusion.image_model import CHECKPOINT as PRIMER_CHECKPOINT
from ..diffusion.image_model import load_image_model
from ..diffusion.sampling import to_model_space
from ..diffusion.schedule import make_train_scheduler
from ..trainer import seeded_init, train_and_ship
from ..worlds.puppet import PuppetConfig, densepose_map, make_puppets
from .models import MagicAnimate, MagicAnimateConfig, PuppetBase

RUNS = ("base", "appearance", "appearance_global", "temporal")
CHECKPOINTS = {run: f"magicanimate_{run}" for run in RUNS}
PARENT = {"appearance": "base", "appearance_global": "base", "temporal": "appearance"}


@dataclass(frozen=True)
class RunSpec(JSONConfig):
    steps: int
    lr: float
    batch: int
    warmup: int = 100


@dataclass(frozen=True)
class MagicAnimateTrainConfig(JSONConfig):
    model: MagicAnimateConfig = field(default_factory=MagicAnimateConfig)
    base: RunSpec = RunSpec(steps=2500, lr=1e-3, batch=32)
    appearance: RunSpec = RunSpec(steps=2400, lr=1e-3, batch=32)
    appearance_global: RunSpec = RunSpec(steps=2400, lr=1e-3, batch=32)
    temporal: RunSpec = RunSpec(steps=2000, lr=5e-4, batch=4)
    p_self: float = 0.1  # τ₀: the reference is the target frame itself
    p_drop: float = 0.1  # the reference dropped (CFG on appearance)
    tau1: float = 0.1  # stage 2: reconstruct the reference
    tau2: float = 0.2  # stage 2: reconstruct one other frame
    ema_decay: float = 0.999
    seed: int = 0

    def spec(self, run: str) -> RunSpec:
        return getattr(self, run)


def _data_seed(config: MagicAnimateTrainConfig, run: str, step: int) -> int:
    return seeds.MAGICANIMATE_DATA + RUNS.index(run) * 1_000_000 + config.seed * 100_000 + step


def _noised(x0: torch.Tensor, generator: torch.Generator, scheduler, device):
    """(x_t, t, ε) with t uniform per clip and ε drawn on the CPU generator (the same on every device)."""
    b = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    x0, t, noise = x0.to(device), t.to(device), noise.to(device)
    shape = (b,) + (1,) * (x0.dim() - 1)
    acp = scheduler.alphas_cumprod.to(device)[t].view(shape)
    return acp.sqrt() * x0 + (1 - acp).sqrt() * noise, t, noise


def base_loss(config: MagicAnimateTrainConfig):
    scheduler = make_train_scheduler()
    world = PuppetConfig(frames=1)

    def loss_fn(model: PuppetBase, step: int, device) -> torch.Tensor:
        s = _data_seed(config, "base", step)
        g = torch.Generator().manual_seed(s + seeds.NOISE_SUBSTREAM)
        x0 = to_model_space(make_puppets(config.base.batch, s, world).frames[:, 0])
        xt, t, noise = _noised(x0, g, scheduler, device)
        tokens = torch.zeros(x0.shape[0], model.unet.config.caption_length, dtype=torch.long, device=device)
        return F.mse_loss(model(xt, t, tokens).float(), noise.float())

    return loss_fn


def appearance_loss(config: MagicAnimateTrainConfig, run: str):
    """Stage 1: single frames, reference of the same identity in another pose (or itself, or dropped)."""
    scheduler = make_train_scheduler()
    spec, pooled = config.spec(run), run == "appearance_global"

    def loss_fn(model: MagicAnimate, step: int, device) -> torch.Tensor:
        s = _data_seed(config, run, step)
        g = torch.Generator().manual_seed(s + seeds.NOISE_SUBSTREAM)
        batch = make_puppets(spec.batch, s, PuppetConfig(frames=1))
        x0 = to_model_space(batch.frames)  # (B, 1, 3, H, W)
        ref = to_model_space(batch.reference)
        r = torch.rand(spec.batch, generator=g)
        ref = torch.where((r < config.p_self)[:, None, None, None], x0[:, 0], ref)
        keep = (r >= config.p_self + config.p_drop) | (r < config.p_self)
        xt, t, noise = _noised(x0, g, scheduler, device)
        iuv = batch.densepose().to(device)
        ref = ref.to(device)
        bank = model.bank(ref, t)
        # a dropped reference must read no bank at all (not a zero one): run the two groups apart
        eps = torch.empty_like(xt)
        idx_keep, idx_drop = keep.nonzero()[:, 0].to(device), (~keep).nonzero()[:, 0].to(device)
        if len(idx_keep):
            sub = {k: v[idx_keep] for k, v in bank.items()}
            eps[idx_keep] = model.eps(xt[idx_keep], t[idx_keep], None, iuv[idx_keep], bank=sub, pooled=pooled)
        if len(idx_drop):
            eps[idx_drop] = model.eps(xt[idx_drop], t[idx_drop], None, iuv[idx_drop], pooled=pooled)
        return F.mse_loss(eps.float(), noise.float())

    return loss_fn


def temporal_loss(config: MagicAnimateTrainConfig):
    """Stage 2: image–video joint training over clips of ``config.model.frames`` frames."""
    scheduler = make_train_scheduler()
    spec = config.temporal
    frames = config.model.frames

    def loss_fn(model: MagicAnimate, step: int, device) -> torch.Tensor:
        s = _data_seed(config, "temporal", step)
        g = torch.Generator().manual_seed(s + seeds.NOISE_SUBSTREAM)
        batch = make_puppets(spec.batch, s, PuppetConfig(frames=frames))
        x0, iuv = to_model_space(batch.frames), batch.densepose()
        ref = to_model_space(batch.reference)
        r = float(torch.rand((), generator=g))
        if r <= config.tau1:  # reconstruct the reference itself (its own pose)
            x0, iuv = ref[:, None], densepose_map(batch.reference_parts, batch.reference_uv)[:, None]
        elif r <= config.tau2:  # one other frame
            k = int(torch.randint(frames, (1,), generator=g))
            x0, iuv = x0[:, k : k + 1], iuv[:, k : k + 1]
        xt, t, noise = _noised(x0, g, scheduler, device)
        eps = model.eps(xt, t, ref.to(device), iuv.to(device))
        return F.mse_loss(eps.float(), noise.float())

    return loss_fn


def build(config: MagicAnimateTrainConfig, run: str, parents: dict | None = None):
    """The model a run trains. Its parents are the shipped checkpoints, or ``parents`` in memory: ``"base"`` (a merged
    base) and, for ``temporal``, ``"appearance"`` (a stage-1 delta) — the notebooks' fallback of short live runs."""
    parents = parents or {}
    if run == "base":
        primer, _ = load_image_model()
        return PuppetBase(primer, config.model.base_rank)
    base = copy.deepcopy(parents["base"]) if "base" in parents else load_base(config)
    model = MagicAnimate(base, config.model, temporal=run == "temporal")
    if run == "temporal":
        state = parents.get("appearance") or checkpoints.load_checkpoint(CHECKPOINTS["appearance"])[0]
        model.load_delta(state, 1)
    model.requires_grad_(False)
    for p in model.stage_parameters(2 if run == "temporal" else 1):
        p.requires_grad_(True)
    return model


def train_run(
    config: MagicAnimateTrainConfig,
    run: str,
    *,
    run_dir: Path | None = None,
    ship: bool = True,
    device: str = "auto",
    resume: bool = False,
    max_minutes: float | None = None,
    progress: bool = True,
    on_step=None,
    parents: dict | None = None,
):
    """Train (or continue) one run; ship it when it completes and ``ship``. ``parents``: see :func:`build`."""
    if run not in RUNS:
        raise ValueError(f"run must be one of {RUNS}, got {run!r}")
    spec = config.spec(run)
    model = seeded_init(config.seed + RUNS.index(run), lambda: build(config, run, parents))
    if run == "base":
        loss_fn, state_dict = base_loss(config), lambda m: {f"lora.{k}": v for k, v in m.lora.state_dict().items()}
    elif run == "temporal":
        loss_fn, state_dict = temporal_loss(config), lambda m: m.delta_state_dict(2)
    else:
        loss_fn, state_dict = appearance_loss(config, run), lambda m: m.delta_state_dict(1)
    parent = PARENT.get(run)
    parent_names = (
        [PRIMER_CHECKPOINT]
        + ([CHECKPOINTS["base"]] if parent else [])
        + ([CHECKPOINTS["appearance"]] if run == "temporal" else [])
    )

    def entry(_state) -> dict:  # read when the run ships: its parents as they are on disk
        return {"parents": {name: checkpoints.manifest_entry(name)["sha256"] for name in parent_names}, "run": run}

    return train_and_ship(
        model,
        loss_fn,
        target="magicanimate",
        checkpoint=CHECKPOINTS[run],
        config=config.to_dict() | {"run": run},
        total_steps=spec.steps,
        lr=spec.lr,
        run_dir=run_dir or Path("runs/magicanimate") / f"seed{config.seed}" / run,
        seed=config.seed,
        ship=ship,
        state_dict=state_dict,
        entry=entry,
        command=f"python -m bytecourse train magicanimate --variant {run}"
        + (f" --seed {config.seed}" if config.seed else ""),
        warmup=spec.warmup,
        ema_decay=config.ema_decay,
        resume=resume,
        max_minutes=max_minutes,
        device=device,
        progress=progress,
        on_step=on_step,
    )


def cli_train(options) -> dict:
    """The runs in order (or ``--variant``'s alone); ``--steps`` overrides every run's steps (smoke tests)."""
    from dataclasses import replace

    config = MagicAnimateTrainConfig(seed=options.seed)
    if options.steps:
        config = replace(config, **{r: replace(config.spec(r), steps=options.steps) for r in RUNS})
    runs = [options.variant] if options.variant else list(RUNS)
    deadline = None if options.max_minutes is None else time.time() + 60 * options.max_minutes
    out = {}
    for run in runs:
        left = None if deadline is None else max(0.01, (deadline - time.time()) / 60)
        run_dir = Path("runs/magicanimate") / f"seed{config.seed}" / run
        resume = bool(options.resume) and (run_dir / "state.json").exists()
        _, summary = train_run(config, run, device=options.device, resume=resume, max_minutes=left)
        out[run] = summary
        if not summary["finished"]:
            break
    return out


def load_base(config: MagicAnimateTrainConfig = MagicAnimateTrainConfig(), device: str | torch.device = "cpu"):
    """The merged, frozen Puppet base (the primer plus the shipped stage-0 delta)."""
    primer, _ = load_image_model()
    base = PuppetBase(primer, config.model.base_rank)
    state, _ = checkpoints.load_checkpoint(CHECKPOINTS["base"])
    base.lora.load_state_dict({k[5:]: v for k, v in state.items()})
    return base.merged().to(device)


def load_models(device: str | torch.device = "cpu") -> dict[str, MagicAnimate]:
    """The shipped models, frozen: ``"temporal"`` (stage 1 dense appearance + ControlNet, stage 2 motion modules)
    and ``"global"`` (the pooled-appearance arm, no temporal modules)."""
    config = MagicAnimateTrainConfig()
    base = load_base(config)
    full = MagicAnimate(base, config.model, temporal=True)
    full.load_delta(checkpoints.load_checkpoint(CHECKPOINTS["appearance"])[0], 1)
    full.load_delta(checkpoints.load_checkpoint(CHECKPOINTS["temporal"])[0], 2)
    pooled = MagicAnimate(load_base(config), config.model)
    pooled.load_delta(checkpoints.load_checkpoint(CHECKPOINTS["appearance_global"])[0], 1)
    return {k: m.to(device).eval().requires_grad_(False) for k, m in {"temporal": full, "global": pooled}.items()}


def quick_train(run: str = "appearance", steps: int = 30, device: str = "auto"):
    """A short live run of ``run``'s own training code (nothing written to ``data/``): the notebook's *Train* demo.
    Its parents are the shipped checkpoints."""
    from dataclasses import replace

    from ..trainer import quick_run

    config = MagicAnimateTrainConfig()
    config = replace(config, **{run: replace(config.spec(run), steps=steps, warmup=min(10, steps))})
    return quick_run(lambda c, **o: train_run(c, run, progress=False, device=device, **o), config)


def quick_models(steps: int = 30, device: str = "cpu") -> dict[str, MagicAnimate]:
    """Every run's own training code for ``steps`` steps, parents in memory, nothing written to ``data/``: the
    notebooks' fallback when a checkpoint is not shipped (expect blurry, barely posed puppets)."""
    from dataclasses import replace

    from ..trainer import quick_run

    config = MagicAnimateTrainConfig()
    config = replace(config, **{r: replace(config.spec(r), steps=steps, warmup=min(10, steps)) for r in RUNS})

    def run(name: str, parents: dict | None = None):
        return quick_run(
            lambda c, **o: train_run(c, name, progress=False, device=device, parents=parents, **o), config
        )[0]

    base = run("base").merged()
    appearance = run("appearance", {"base": base})
    temporal = run("temporal", {"base": base, "appearance": appearance.delta_state_dict(1)})
    return {"temporal": temporal, "global": run("appearance_global", {"base": base})}


def get_models(device: str = "cpu") -> tuple[dict[str, MagicAnimate], str]:
    """The shipped models when every checkpoint is present; otherwise short live runs of the same code (and the
    string says so)."""
    if all(checkpoints.checkpoint_available(name) for name in CHECKPOINTS.values()):
        return load_models(device), "shipped checkpoints"
    return quick_models(device=device), "no shipped checkpoints: short live runs of the training code (30 steps each)"
