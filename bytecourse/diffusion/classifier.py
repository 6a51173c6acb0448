"""A small attribute classifier trained on *clean* Shapes images — the off-the-shelf "guidance network".

Training-free guidance (FreeDoM, Universal Guidance, SAG, AdjointDPM) scores a clean-image estimate with a
network that never saw noisy images. Our stand-in for CLIP / an ImageNet classifier: a four-layer CNN with
three heads on one-object world images — the object's **colour** (6 classes), **shape** (3) and horizontal
**position** (left / centre / right third of the image, from the exact box centre). Inputs are in model
space [−1, 1], the space the samplers' x̂₀ lives in.

``python -m bytecourse train classifier`` trains and ships it (``data/shapes_classifier.safetensors``, well
about a minute on 2 CPU cores); ``python -m bytecourse eval classifier`` stores its accuracy on held-out clean
images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoints, seeds
from ..worlds import ShapesConfig, make_shapes
from .layers import JSONConfig
from .sampling import to_model_space

CHECKPOINT = "shapes_classifier"
HEADS = {"colour": 6, "shape": 3, "position": 3}
POSITION_NAMES = ("left", "centre", "right")


@dataclass(frozen=True)
class ClassifierConfig(JSONConfig):
    image_size: int = 32
    width: int = 32
    steps: int = 1500
    batch: int = 128
    lr: float = 2e-3
    seed: int = 0


class ShapesClassifier(nn.Module):
    """conv(s2)×3 → flatten (keeps where things are) → MLP → three heads. ``forward`` returns a dict of logits."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1),
            nn.SiLU(),
        )
        side = config.image_size // 8
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * side * side, 128), nn.SiLU())
        self.heads = nn.ModuleDict({k: nn.Linear(128, n) for k, n in HEADS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] != self.config.image_size:
            raise ValueError(
                f"expected images (B, 3, {self.config.image_size}, {self.config.image_size}), got {tuple(x.shape)}"
            )
        h = self.trunk(self.features(x))
        return {k: head(h) for k, head in self.heads.items()}


def position_labels(centers_x: torch.Tensor, image_size: int) -> torch.Tensor:
    """0 / 1 / 2 for a centre in the left / middle / right third."""
    return (centers_x / image_size * 3).floor().clamp(0, 2).long()


def labelled_batch(n: int, seed: int, image_size: int = 32) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One-object world images in model space and their exact labels."""
    b = make_shapes(n, seed, ShapesConfig(size=image_size), num_objects=1)
    labels = {
        "colour": b.colours[:, 0],
        "shape": b.shapes[:, 0],
        "position": position_labels(b.centers[:, 0, 0], image_size),
    }
    return to_model_space(b.images), labels


def classifier_loss(model: ShapesClassifier, x: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(x)
    return sum(F.cross_entropy(logits[k], labels[k]) for k in HEADS)


def classifier_batch_loss(config: ClassifierConfig):
    """``loss_fn(model, step, device)`` for the trainer: a fresh labelled batch per step, seeded by (seed, step)."""

    def loss_fn(model, step: int, device: torch.device) -> torch.Tensor:
        x, labels = labelled_batch(config.batch, config.seed * seeds.TRAIN_SEED_STRIDE + step, config.image_size)
        return classifier_loss(model, x.to(device), {k: v.to(device) for k, v in labels.items()})

    return loss_fn


def train_classifier(
    config: ClassifierConfig = ClassifierConfig(),
    *,
    steps: int | None = None,
    ship: bool = False,
    progress: bool = True,
    device: str = "auto",
    run_dir: Path | None = None,
    resume: bool = False,
    max_minutes: float | None = None,
) -> tuple[ShapesClassifier, dict]:
    """Adam with cosine decay to 0 and no warm-up or clipping, on fresh batches (seeded by step), through the shared
    trainer (resumable; the raw weights ship, there is no EMA). Returns the model and a summary with the per-step
    ``losses`` and the held-out accuracy; ``ship`` writes the fp16 checkpoint and its manifest entry."""
    import tempfile

    from ..trainer import seeded_init, train_and_ship

    if steps is not None:
        config = replace(config, steps=steps)
    model = seeded_init(config.seed, lambda: ShapesClassifier(config))
    losses: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        # Adam, cosine decay to 0, no warm-up, clipping or EMA: the classifier's own recipe
        recipe = {"ship_ema": False, "warmup": 0, "final_lr_ratio": 0.0, "clip_grad": None}
        run = {"resume": resume, "max_minutes": max_minutes, "device": device, "progress": progress}
        model, summary = train_and_ship(
            model,
            classifier_batch_loss(config),
            target="classifier",
            checkpoint=CHECKPOINT,
            config=config.to_dict(),
            total_steps=config.steps,
            lr=config.lr,
            run_dir=run_dir or Path(tmp),
            seed=config.seed,
            ship=ship,
            on_step=lambda step, loss: losses.append(loss),
            **recipe,
            **run,
        )
    model = model.cpu().eval().requires_grad_(False)
    summary |= {"losses": losses, "steps": config.steps}
    if summary["finished"]:
        summary["heldout_accuracy"] = accuracy(model, seeds=[0])
    return model, summary


HELDOUT_OFFSET = seeds.CLASSIFIER_HELDOUT  # held-out images never coincide with training batches


@torch.no_grad()
def accuracy(model: ShapesClassifier, seeds: list[int], n: int = 512) -> dict[str, float]:
    """Per-head accuracy on held-out clean one-object images."""
    correct = {k: 0.0 for k in HEADS}
    for s in seeds:
        x, labels = labelled_batch(n, HELDOUT_OFFSET + s, model.config.image_size)
        logits = model(x)
        for k in HEADS:
            correct[k] += float((logits[k].argmax(1) == labels[k]).float().mean())
    return {k: round(v / len(seeds), 4) for k, v in correct.items()}


def load_classifier(device: str | torch.device = "cpu") -> ShapesClassifier:
    """The shipped classifier (hash-verified), frozen."""
    state, entry = checkpoints.load_checkpoint(CHECKPOINT)
    model = ShapesClassifier(ClassifierConfig.from_dict(entry["config"]))
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False)


def get_classifier(device: str | torch.device = "cpu", progress: bool = False) -> tuple[ShapesClassifier, str]:
    """The shipped classifier, or (if its file is missing) a fresh one trained now with the same code."""
    if checkpoints.checkpoint_available(CHECKPOINT):
        return load_classifier(device), "shipped checkpoint"
    model, _ = train_classifier(progress=progress)
    return model.to(device), "trained now (no shipped checkpoint found)"


def cli_train(options) -> dict:
    config = ClassifierConfig(seed=options.seed, **({"steps": options.steps} if options.steps else {}))
    _, summary = train_classifier(
        config,
        ship=True,
        device=options.device,
        run_dir=Path("runs/classifier"),
        resume=options.resume,
        max_minutes=options.max_minutes,
    )
    summary.pop("losses")
    return summary


def cli_eval(options) -> dict:
    from ..evaluation import summarise

    model = load_classifier()
    per_seed = [accuracy(model, [s]) for s in options.seeds]
    return {
        "heldout": {
            "rows": [{"setting": "clean held-out images", "metrics": summarise(per_seed)}],
            "seeds": list(options.seeds),
            "samples_per_seed": 512,
            "setting_name": "input",
        }
    }
