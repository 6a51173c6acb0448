"""The one training loop and the one train-and-ship helper behind every ``python -m bytecourse train``.

- Runs under 🤗 Accelerate (so ``accelerate launch`` spreads it over several GPUs; bf16 on CUDA).
- Saves a resumable state every ``save_every`` steps and when ``max_minutes`` is reached, so a schedule
  longer than 45 minutes on a 2-core CPU becomes several commands (``--resume``). A resumed run may extend
  the schedule (a larger ``--steps``); the learning-rate schedule is then recomputed for the new total.
- The state is safetensors + JSON (model, EMA, AdamW moments, step, elapsed time) — no pickle anywhere.
- :func:`train_and_ship` wraps it for every chapter: build, train (resumably), and when the schedule is complete
  write the shipped checkpoint with its manifest entry (the command that actually ran, seed, commit, device, wall
  time, every stage's command line). :func:`seeded_init` builds a model from a seed without touching the global
  random state.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .diffusion.training import EMA


@dataclass
class TrainState:
    step: int = 0
    elapsed_s: float = 0.0
    stages: int = 0
    last_loss: float = float("nan")
    commands: list[str] = field(default_factory=list)  # the command line of every stage that ran, in order


def lr_at(step: int, total: int, peak: float, warmup: int, final_ratio: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``final_ratio`` × the peak:
    lr = peak · (r + (1 − r) · ½(1 + cos πp)), p = (step − warmup) / (total − warmup)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def seeded_init(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with torch's generator seeded by ``seed`` inside :func:`torch.random.fork_rng`, so the
    parameters are reproducible and the caller's global random state is left exactly as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = v.detach().cpu().contiguous() if torch.is_tensor(v) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_state(
    run_dir: Path, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer, state: TrainState, config: dict
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    # clone: tied weights (an LM's embedding and head) share storage, which safetensors refuses to write twice
    tensors = {f"model.{k}": v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v.detach().cpu().clone().contiguous() for k, v in ema.model.state_dict().items()}
    opt_t, opt_meta = _optimizer_tensors(opt)
    tensors |= opt_t
    save_file(tensors, str(run_dir / "state.safetensors"))
    meta = {"state": state.__dict__, "ema_updates": ema.updates, "optimizer": opt_meta, "config": config}
    (run_dir / "state.json").write_text(json.dumps(meta, indent=2))


def load_state(run_dir: Path, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer, config: dict) -> TrainState:
    meta = json.loads((run_dir / "state.json").read_text())
    # a schedule may be *extended* (a larger total "steps"); anything else must match
    saved = {k: v for k, v in meta["config"].items() if k != "steps"}
    wanted = {k: v for k, v in json.loads(json.dumps(config)).items() if k != "steps"}
    if saved != wanted:
        raise ValueError(
            f"cannot resume {run_dir}: it was started with a different config; delete it or match the options"
        )
    if "steps" in config and config["steps"] < meta["state"]["step"]:
        raise ValueError(
            f"cannot resume {run_dir} with steps={config.get('steps')}: it has already run {meta['state']['step']}"
        )
    tensors = load_file(str(run_dir / "state.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    ema.updates = meta["ema_updates"]
    _load_optimizer(opt, tensors, meta["optimizer"])
    return TrainState(**meta["state"])


@torch.enable_grad()  # works even where a notebook has switched gradients off globally
def train_loop(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, int, torch.device], torch.Tensor],
    *,
    total_steps: int,
    lr: float,
    run_dir: Path,
    config: dict,
    warmup: int = 200,
    ema_decay: float = 0.999,
    weight_decay: float = 0.0,
    final_lr_ratio: float = 0.1,
    clip_grad: float | None = 1.0,
    resume: bool = False,
    max_minutes: float | None = None,
    save_every: int = 500,
    device: str = "auto",
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    param_groups: list[dict] | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
) -> tuple[EMA, TrainState, Accelerator]:
    """Train ``model`` for ``total_steps`` on ``loss_fn(model, step, device)`` (which draws its own seeded
    batch for that step, so a resumed run sees exactly the data an uninterrupted one would).

    Returns the EMA, the final state (``state.step < total_steps`` when stopped by ``max_minutes``) and the
    accelerator. ``on_step(step, loss)`` is called after every step (e.g. to record a loss curve). The optimiser
    is AdamW over the parameters that require gradients; ``final_lr_ratio`` and ``warmup`` shape :func:`lr_at`;
    ``clip_grad=None`` turns gradient clipping off. ``param_groups`` (optional): AdamW groups over ``model``'s
    parameters, each with an ``lr_scale`` (its rate is ``lr_scale`` × the schedule's), e.g. a pretrained backbone
    tuned more gently than new heads. ``betas``: AdamW's (β₁, β₂)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    cpu = device == "cpu"
    acc = Accelerator(cpu=cpu, mixed_precision="bf16" if (torch.cuda.is_available() and not cpu) else "no")
    if device not in ("auto", "cpu") and torch.device(device).type != acc.device.type:
        raise ValueError(f"device {device!r} requested but accelerate chose {acc.device}")
    model.to(acc.device)
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    ema = EMA(model, ema_decay)
    state = TrainState()
    if resume and (run_dir / "state.json").exists():
        state = load_state(run_dir, model, ema, opt, config)
    elif resume:
        raise ValueError(f"--resume given but {run_dir / 'state.json'} does not exist")
    ema.model.to(acc.device)
    model, opt = acc.prepare(model, opt)
    state.stages += 1
    state.commands.append(
        " ".join(["python -m bytecourse", *sys.argv[1:]])
        if sys.argv[0].endswith("bytecourse/__main__.py")
        else "(called from Python)"
    )
    start = time.time()
    base_elapsed = state.elapsed_s
    bar = tqdm(total=total_steps, initial=state.step, disable=not (progress and acc.is_main_process), desc="train")
    model.train()
    while state.step < total_steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(state.step, total_steps, lr, warmup, final_lr_ratio) * group.get("lr_scale", 1.0)
        with acc.autocast():
            loss = loss_fn(model, state.step * acc.num_processes + acc.process_index, acc.device)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        if clip_grad is not None:
            acc.clip_grad_norm_(model.parameters(), clip_grad)
        opt.step()
        ema.update(acc.unwrap_model(model))
        state.step += 1
        state.last_loss = float(loss.detach())
        if on_step is not None:
            on_step(state.step, state.last_loss)
        bar.update(1)
        if state.step % 50 == 0:
            bar.set_postfix(loss=f"{state.last_loss:.4f}")
        state.elapsed_s = base_elapsed + time.time() - start
        out_of_time = max_minutes is not None and (time.time() - start) > 60 * max_minutes
        if acc.is_main_process and (state.step % save_every == 0 or out_of_time or state.step == total_steps):
            save_state(run_dir, acc.unwrap_model(model), ema, opt, state, config)
        if out_of_time:
            break
    bar.close()
    return ema, state, acc


def train_and_ship(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, int, torch.device], torch.Tensor],
    *,
    target: str,
    checkpoint: str | None,
    config: dict,
    total_steps: int,
    lr: float,
    run_dir: Path,
    seed: int,
    ship: bool = True,
    ship_ema: bool = True,
    state_dict: Callable[[nn.Module], dict[str, torch.Tensor]] | None = None,
    entry: dict | Callable[[TrainState], dict] | None = None,
    command: str | None = None,
    **loop_options,
) -> tuple[nn.Module, dict]:
    """Train ``model`` with :func:`train_loop` and, once the schedule is complete and ``ship`` (and
    ``checkpoint`` is a name), write ``data/<checkpoint>.safetensors`` and its manifest entry.

    ``ship_ema`` ships the EMA weights (diffusion models) or the raw ones (the classifier, Vista-LLaMA's LM and
    projectors, trained without an EMA in their papers). ``state_dict(model)`` selects what is written (default:
    the whole state; e.g. only a delta or a projector). ``entry`` adds (or overrides) manifest fields — a dict, or
    ``entry(state)`` called once the schedule is complete (e.g. a multi-stage history); ``command`` overrides the
    recorded command (default: ``python -m bytecourse train <target>`` with the options actually given, without
    the ones that only split a run: ``--resume``, ``--max-minutes``). ``loop_options`` go to :func:`train_loop`.

    Returns the trained model (EMA or raw, as shipped) and a summary; ``summary["finished"]`` is False when
    ``max_minutes`` stopped the run (continue it with ``resume=True``)."""
    from . import checkpoints

    commit = checkpoints.git_commit()  # the code that starts the run is the code that trains it
    ema, state, acc = train_loop(
        model, loss_fn, total_steps=total_steps, lr=lr, run_dir=run_dir, config=config, **loop_options
    )
    trained = ema.model if ship_ema else acc.unwrap_model(model)
    finished = state.step >= total_steps
    summary = {
        "step": state.step,
        "total_steps": total_steps,
        "finished": finished,
        "wall_time_s": round(state.elapsed_s, 1),
        "stages": state.stages,
        "final_loss": state.last_loss,
        "device": str(acc.device),
    }
    if ship and finished and checkpoint is not None and acc.is_main_process:
        tensors = (state_dict or (lambda m: m.state_dict()))(trained)
        checkpoints.save_checkpoint(
            checkpoint,
            tensors,
            {
                "chapter": target,
                "config": config,
                "command": command or checkpoints.train_command(target),
                "seed": seed,
                "git_commit": commit,
                "device": checkpoints.device_description(acc.device),
                "wall_time_s": round(state.elapsed_s, 1),
                "stages": state.stages,
                "stage_commands": state.commands,
                "train_metrics": {"final_loss": round(state.last_loss, 5), "steps": state.step},
                "parameters": sum(v.numel() for v in tensors.values()),
                **((entry(state) if callable(entry) else entry) or {}),
            },
        )
        summary["shipped"] = checkpoint
    return trained, summary


def quick_run(train: Callable[..., tuple[nn.Module, dict]], config, **options) -> tuple[nn.Module, dict]:
    """A short live run of a training command's own code (the notebooks' *Train* demos, and their fallback when a
    checkpoint is not shipped): ``train(config, run_dir=<temporary>, ship=False, on_step=…, **options)``. Nothing is
    written to ``data/``. Returns the trained model (frozen, eval mode) and the summary with the per-step ``losses``
    and the wall ``seconds``."""
    import tempfile

    losses: list[float] = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        model, summary = train(
            config, run_dir=Path(tmp), ship=False, on_step=lambda s, loss: losses.append(loss), **options
        )
    return model.eval().requires_grad_(False), summary | {"losses": losses, "seconds": time.time() - t0}
