"""Chapter 01's widget: guidance strength, n, the guided window → unguided and guided samples side by side."""

from __future__ import annotations

from dataclasses import replace

import torch

from .. import text
from ..diffusion import initial_noise, make_train_scheduler, to_image_space
from ..diffusion.classifier import get_classifier
from ..diffusion.image_model import DEFAULT_GUIDANCE_SCALE
from .evaluate import STEPS, make_loss, oracle_measures, style_reference
from .guided import guided_sample, sag, unguided_sample


def guide_preview(
    model,
    strength: float,
    n: int,
    window: tuple[float, float],
    task: str = "style",
    caption: str = "a red circle",
    seed: int = 0,
    samples: int = 4,
    classifier=None,
) -> dict:
    """Pure function behind the widget: unguided and guided samples from the same noise, with the guidance loss,
    the oracle's verdicts and the network evaluations."""
    if samples < 1:
        raise ValueError(f"samples must be ≥ 1, got {samples}")
    loss_fn = make_loss(task, classifier)
    caps = [caption] * samples
    tokens = text.encode(caps, model.config.caption_length)
    noise = initial_noise((samples, 3, model.config.image_size, model.config.image_size), seed)
    sched = make_train_scheduler()
    base = unguided_sample(
        model, noise, tokens, sched, loss_fn, steps=STEPS, guidance_scale=DEFAULT_GUIDANCE_SCALE, seed=seed
    )
    guidance = replace(sag(int(n)), strength=float(strength), window=(float(window[0]), float(window[1])))
    r = guided_sample(
        model, noise, tokens, sched, loss_fn, guidance, steps=STEPS, guidance_scale=DEFAULT_GUIDANCE_SCALE, seed=seed
    )
    imgs_b, imgs_g = to_image_space(base.x0), to_image_space(r.x0)
    return {
        "task": task,
        "caption": caption,
        "strength": strength,
        "n": int(n),
        "window": tuple(window),
        "unguided": {"images": imgs_b, "loss": base.loss, **oracle_measures(imgs_b, caps), "nfe": base.nfe},
        "guided": {
            "images": imgs_g,
            "loss": r.loss,
            **oracle_measures(imgs_g, caps),
            "nfe": r.nfe,
            "vjp": r.vjp,
            "seconds": r.seconds,
        },
        "trace": r.trace,
    }


def render_preview(result: dict) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display

    from ..viz import image_grid

    u, g = result["unguided"], result["guided"]
    lo, hi = result["window"]
    print(
        f"{result['task']} guidance · strength {result['strength']:g} · n={result['n']} · window {lo:.2f}–{hi:.2f} → "
        f"loss {float(u['loss'].mean()):.3f} → {float(g['loss'].mean()):.3f}, realism {u['realism']:.3f} → "
        f"{g['realism']:.3f}, "
        f"content {u['content']:.2f} → {g['content']:.2f}, left {u['left_hit']:.2f} → {g['left_hit']:.2f}, "
        f"network evaluations {u['nfe']:.0f} → {g['nfe']:.0f} (+{g['vjp']:.0f} VJPs)"
    )
    images = torch.cat([u["images"], g["images"]])
    titles = [f"unguided {v:.2f}" for v in u["loss"].tolist()] + [f"guided {v:.2f}" for v in g["loss"].tolist()]
    target = (
        "towards the Gram statistics of “" + style_reference()[1] + "” on a textured background"
        if result["task"] == "style"
        else "object towards the left third"
    )
    fig = image_grid(
        images,
        titles,
        ncols=len(u["images"]),
        suptitle=f"“{result['caption']}”, {target}: top unguided, bottom guided (loss per sample)",
    )
    display(fig)
    plt.close(fig)


def sag_explorer(model, samples: int = 4, classifier=None):
    """The main widget of chapter 01."""
    import ipywidgets as W

    from ..widgets import FunctionView

    clf = classifier if classifier is not None else get_classifier()[0]
    controls = {
        "task": W.Dropdown(options=["style", "position"], value="style", description="task"),
        "strength": W.FloatSlider(
            value=1.0, min=0.0, max=4.0, step=0.25, description="strength", continuous_update=False
        ),
        "n": W.SelectionSlider(options=[1, 2, 4, 8], value=4, description="n (NFE/x̂₀)", continuous_update=False),
        "window": W.FloatRangeSlider(
            value=(0.3, 0.7), min=0.0, max=1.0, step=0.05, description="guided steps", continuous_update=False
        ),
        "seed": W.IntSlider(value=0, min=0, max=20, description="seed", continuous_update=False),
    }
    return FunctionView(
        controls,
        lambda **v: guide_preview(model, samples=samples, classifier=clf, **v),
        render_preview,
        title="Training-free guidance: the n-step estimate",
    )


def plot_fronts(fronts: dict[str, list[dict]], x: str, y: str, ax=None, title: str = "", level: float | None = None):
    """Each method's front (from :func:`~bytecourse.sag.evaluate.fronts`): mean ``y`` against mean ``x`` over the
    evaluation seeds, one point per guidance strength (labelled), with the seeds' min–max as error bars; ``level``
    draws the matched-``x`` line the verdicts read."""
    import matplotlib.pyplot as plt

    ax = ax if ax is not None else plt.subplots(figsize=(5, 3.4))[1]
    for name, front in fronts.items():
        mx = [p["metrics"][x] for p in front]
        my = [p["metrics"][y] for p in front]
        xs = [sum(m["per_seed"]) / len(m["per_seed"]) for m in mx]
        ys = [sum(m["per_seed"]) / len(m["per_seed"]) for m in my]
        xerr = [[v - min(m["per_seed"]) for v, m in zip(xs, mx)], [max(m["per_seed"]) - v for v, m in zip(xs, mx)]]
        yerr = [[v - min(m["per_seed"]) for v, m in zip(ys, my)], [max(m["per_seed"]) - v for v, m in zip(ys, my)]]
        line = ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="o", ms=3, lw=1, capsize=2, label=name)
        for p, xv, yv in zip(front, xs, ys):
            ax.annotate(
                f"{p['strength']:g}",
                (xv, yv),
                fontsize=6,
                color=line[0].get_color(),
                xytext=(2, 2),
                textcoords="offset points",
            )
    if level is not None:
        ax.axvline(level, color="grey", ls=":", lw=1)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    return ax
