"""Chapter 06's widget: a caption and the noise prior's strength → the four stages side by side (reference, 32-px
keyframes, 64-px clip, 15-frame clip), the oracle's verdict per stage, and where this run sits on the layout-vs-motion
trade-off of the stored noise-prior sweep."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from .. import seeds
from ..diffusion.video_eval import fully_inside
from ..evaluation import psnr
from ..oracle import caption_accuracy, detect_objects
from ..validation import check_choice, check_int
from .evaluate import clip_criteria, eval_clips, motion_amplitude
from .models import NOISE_PRIORS
from .pipeline import CascadeSettings, cascade

#: the widget's captions: held-out clips of its own seed (not one the tables score)
WIDGET_SEED = 90
CAPTIONS = 8


def widget_captions() -> list[str]:
    return eval_clips(WIDGET_SEED, CAPTIONS).captions


@torch.no_grad()
def cascade_view(
    models: dict,
    caption: int = 0,
    strength: float = 0.5,
    prior: str = "matched",
    seed: int = 0,
    base: CascadeSettings = CascadeSettings(),
) -> dict:
    """Pure function behind the widget: the cascade for held-out caption number ``caption`` with the noise prior
    ``prior`` at ``strength``, the other knobs from ``base`` (the notebook passes the evaluated settings), and the
    oracle's reading of each stage."""
    caption = check_int("caption", caption, 0, CAPTIONS - 1)
    prior = check_choice("prior", prior, NOISE_PRIORS)
    seed = check_int("seed", seed, 0, 1000)
    settings = replace(base, prior=prior, strength=strength)
    settings.validate()  # λ in [0, 1], γ in [0, 1)
    batch = eval_clips(WIDGET_SEED, CAPTIONS)
    real = eval_clips(WIDGET_SEED, CAPTIONS, frames=15, size=64)
    text = batch.captions[caption]
    out = cascade(models, batch.tokens[caption : caption + 1], seeds.MAGICVIDEO_EVAL + 90_000 + seed, settings)
    ref, keys = out["reference"][0], out["keyframes"][0]
    ref_ok = caption_accuracy([text], detect_objects(ref[None]))["exact"]
    key_scores = clip_criteria(keys, text, torch.ones(keys.shape[0], dtype=torch.bool))
    final = clip_criteria(out["clip15"][0], text, fully_inside(real)[caption])
    sharp = clip_criteria(out["clip64"][0], text, torch.ones(keys.shape[0], dtype=torch.bool))
    return {
        "settings": {"caption": text, "strength": strength, "prior": prior, "seed": seed},
        "reference": ref,
        "keyframes": keys,
        "clip64": out["clip64"][0],
        "clip15": out["clip15"][0],
        "stages": {
            "T2I": f"object {'drawn as captioned' if ref_ok == 1 else 'not as captioned'}",
            "I2V": f"caption {key_scores['caption']:.2f} · motion {'read' if key_scores['direction'] else 'not read'}",
            "V2V": f"structure {sharp['structure']:.2f}",
            "VFI": f"temporal error {final['temporal']:.4f} · realism {final['realism']:.2f}",
        },
        "point": {
            "frame0_psnr": float(psnr(keys[:1], ref[None]).mean()),
            "motion": float(motion_amplitude(keys[None]).mean()),
        },
        "criteria": final,
    }


def _timeline(view: dict) -> torch.Tensor:
    """The four stages as one ``(4, 15, 3, 64, 64)`` animation: the reference held, keyframes and the 64-px clip
    held for two frames each (nearest-neighbour upsampled), the interpolated clip as it is."""
    n = view["clip15"].shape[0]
    hold = torch.arange(n) // 2
    up = lambda x: F.interpolate(x, size=(64, 64), mode="nearest")  # noqa: E731
    ref = up(view["reference"][None]).expand(n, -1, -1, -1)
    keys = up(view["keyframes"])[hold]
    return torch.stack([ref, keys, view["clip64"][hold], view["clip15"]])


def render_view(view: dict, curve: list[dict] | None = None) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display

    from ..viz import animate_video

    s = view["settings"]
    sym = "λ" if s["prior"] == "shift" else "γ"
    print(f"“{s['caption']}” · noise prior {s['prior']} {sym} = {s['strength']:.2f} · seed {s['seed']}")
    print(" · ".join(f"{stage}: {text}" for stage, text in view["stages"].items()))
    display(
        animate_video(
            _timeline(view),
            titles=["T2I reference (32 px)", "I2V keyframes (32 px ×8)", "V2V (64 px ×8)", "VFI (64 px ×15)"],
            interval=160,
        )
    )
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    if curve:
        for mode, marker in (("shift", "o-"), ("vp", "s--"), ("matched", "^-.")):
            rows = [r for r in curve if r["prior"] == mode]
            if not rows:
                continue
            xs = [r["metrics"]["motion"]["mean"] for r in rows]
            ys = [r["metrics"]["frame0_psnr"]["mean"] for r in rows]
            ax.plot(xs, ys, marker, ms=4, label=f"stored sweep ({mode})", alpha=0.7)
            for r, x, y in zip(rows, xs, ys):
                ax.annotate(f"{r['strength']:g}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    p = view["point"]
    ax.plot([p["motion"]], [p["frame0_psnr"]], "r*", ms=14, label="this run")
    ax.set_xlabel("motion amplitude  mean |x_{t+1} − x_t|")
    ax.set_ylabel("frame-0 PSNR vs reference (dB)")
    ax.set_title("layout retention vs motion", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    display(fig)
    plt.close(fig)


def cascade_explorer(models: dict, curve: list[dict] | None = None, settings: CascadeSettings = CascadeSettings()):
    """The main widget of chapter 06; ``curve``: the stored ``noise_prior`` table's rows (None: no curve);
    ``settings``: where the controls start and the knobs they leave alone (the evaluated ones:
    :func:`~bytecourse.magicvideo.evaluate.stored_settings`)."""
    import ipywidgets as W

    from ..widgets import FunctionView

    caps = widget_captions()
    controls = {
        "caption": W.Dropdown(options=[(c, i) for i, c in enumerate(caps)], value=0, description="caption"),
        "strength": W.FloatSlider(
            value=settings.strength, min=0.0, max=0.9, step=0.05, description="λ / γ", continuous_update=False
        ),
        "prior": W.ToggleButtons(options=list(NOISE_PRIORS), value=settings.prior, description="prior"),
        "seed": W.IntSlider(value=0, min=0, max=20, description="seed", continuous_update=False),
    }
    return FunctionView(
        controls,
        lambda **v: cascade_view(models, **v, base=settings),
        lambda view: render_view(view, curve),
        title="Text → image → video → 64 px → 15 frames: move the noise prior and watch layout trade against motion",
    )


__all__ = ["CAPTIONS", "WIDGET_SEED", "cascade_explorer", "cascade_view", "render_view", "widget_captions"]
