"""Chapter 00's widget: guidance scale and DDIM steps → samples with the oracle's verdict on each."""

from __future__ import annotations

from ..diffusion.image_model import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, sample_captions
from ..diffusion.unet import ImageDenoiser


def sample_with_verdicts(
    model: ImageDenoiser,
    caption: str,
    guidance_scale: float,
    steps: int,
    seed: int = 0,
    n: int = 8,
    use_clipped_model_output: bool = True,
) -> dict:
    """Pure function behind the widget: ``n`` samples of one caption and the oracle's verdict on each.
    ``use_clipped_model_output``: DDIM's ε̂ recomputed from the clipped x̂₀ (the cure for the guidance collapse,
    :func:`~bytecourse.diffusion.sampling.ddim_sample`, the default); ``False`` shows the collapse."""
    from ..oracle import detect_objects, realism, score_caption
    from ..validation import check_flag, check_int

    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"caption must be a non-empty string, got {caption!r}")
    captions = [caption] * check_int("n", n, 1)
    images = sample_captions(
        model,
        captions,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        use_clipped_model_output=check_flag("use_clipped_model_output", use_clipped_model_output),
    )
    dets = detect_objects(images)
    scores = [score_caption(caption, d) for d in dets]
    real = realism(images)
    return {
        "images": images,
        "detections": dets,
        "scores": scores,
        "realism": real,
        "caption": caption,
        "guidance_scale": guidance_scale,
        "steps": steps,
        "use_clipped_model_output": use_clipped_model_output,
        "nfe": steps * (1 if guidance_scale == 1.0 else 2),
        "summary": {
            "colour": sum(s.colour for s in scores) / n,
            "shape": sum(s.shape for s in scores) / n,
            "exact": sum(s.exact for s in scores) / n,
            "realism": float(real.mean()),
        },
    }


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
    fix = (
        " · ε̂ from the clipped x̂₀"
        if result.get("use_clipped_model_output", True)
        else " · raw guided ε̂ (the collapse)"
    )
    print(
        f"CFG {result['guidance_scale']:g} · {result['steps']} DDIM steps{fix} · {result['nfe']} network evaluations "
        "→ "
        f"colour {s['colour']:.2f}, shape {s['shape']:.2f}, exact {s['exact']:.2f}, realism {s['realism']:.3f}"
    )
    fig = image_grid(
        result["images"],
        titles,
        ncols=8,
        boxes=boxes,
        suptitle=(
            f"“{result['caption']}” — CFG {result['guidance_scale']:g}, {result['steps']} DDIM steps "
            f"({result['nfe']} network evaluations): colour {s['colour']:.2f}, shape {s['shape']:.2f}, "
            f"exact {s['exact']:.2f}, realism {s['realism']:.3f}"
        ),
    )
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
        "guidance_scale": W.FloatSlider(
            value=DEFAULT_GUIDANCE_SCALE, min=0.0, max=10.0, step=0.5, description="CFG scale", continuous_update=False
        ),
        "steps": W.SelectionSlider(
            options=[2, 5, 10, 20, 50], value=DEFAULT_STEPS, description="DDIM steps", continuous_update=False
        ),
        "seed": W.IntSlider(value=0, min=0, max=20, description="seed", continuous_update=False),
        "use_clipped_model_output": W.Checkbox(
            value=True,
            description="recompute ε̂ from the clipped x̂₀ (the cure; untick to see the collapse)",
            indent=False,
        ),
    }
    return FunctionView(
        controls,
        lambda **v: sample_with_verdicts(model, n=n, **v),
        render_verdicts,
        title="Classifier-free guidance explorer",
    )


__all__ = ["primer_explorer", "render_verdicts", "sample_with_verdicts"]
