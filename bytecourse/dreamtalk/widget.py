"""Chapter 07's widget: a sentence, an emotion and its intensity, style guidance and the lip refiner → a talking face,
with its mouth and brow curves against the world's ground truth."""

from __future__ import annotations

import torch

from .. import seeds
from ..validation import check_choice, check_flag, check_float, check_int
from ..worlds.talking import EMOTIONS, MOUTH_DIMS, make_talking
from .render import coefficient_curves, render_faces
from .sampling import DEFAULT_GUIDANCE_SCALE, generate

SYSTEMS = ("EmoDiff", "LSTM")


@torch.no_grad()
def talking_view(
    models: dict,
    sentence: int = 0,
    emotion: str = "happy",
    intensity: float = 0.8,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    refiner: bool = True,
    system: str = "EmoDiff",
    sample: int = 0,
) -> dict:
    """Pure function behind the widget: one clip of the Talking world (``sentence`` seeds its sentence, speaker and
    style clip), the chosen system's sequence for its audio, initial state and style, and how it scores."""
    sentence = check_int("sentence", sentence, 0, 10_000)
    emotion = check_choice("emotion", emotion, EMOTIONS)
    intensity = check_float("intensity", intensity, 0.0, 1.0)
    system = check_choice("system", system, SYSTEMS)
    refiner = check_flag("refiner", refiner)
    clip = make_talking(1, seeds.DREAMTALK_EVAL + 900_000 + sentence, emotion=emotion, intensity=intensity)
    if system == "LSTM":
        out = models["lstm"].predict(clip.audio, clip.initial, clip.style)
    else:
        out = generate(
            models["emodiff"],
            clip.audio,
            clip.initial,
            clip.style,
            guidance_scale=guidance_scale,
            seed=check_int("sample", sample, 0, 10_000),
        )
    if refiner:
        out = models["refiner"].refine(out, clip.audio, clip.style)
    probs = models["emotion"](out).softmax(-1)[0]
    return {
        "settings": {
            "sentence": sentence,
            "emotion": emotion,
            "intensity": intensity,
            "guidance_scale": guidance_scale,
            "refiner": refiner,
            "system": system,
        },
        "coeffs": out[0],
        "truth": clip.coeffs[0],
        "mouth_target": clip.mouth_target[0],
        "lip_error": float(((out[0, :, MOUTH_DIMS] - clip.mouth_target[0]) ** 2).mean()),
        "emotion_read": EMOTIONS[int(probs.argmax())],
        "emotion_probability": float(probs[EMOTIONS.index(emotion)]),
        "phonemes": " ".join(p for p, _ in clip.sentences[0]),
    }


def render_view(view: dict) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display

    from ..viz import animate_video

    s = view["settings"]
    how = "LSTM" if s["system"] == "LSTM" else f"EmoDiff, style guidance {s['guidance_scale']:g}"
    print(
        f"{s['emotion']} {s['intensity']:.1f} · {how} · lip refiner {'on' if s['refiner'] else 'off'} → lip error "
        f"{view['lip_error']:.4f} · the emotion classifier reads {view['emotion_read']} "
        f"(p({s['emotion']}) = {view['emotion_probability']:.2f})"
    )
    print(f"phonemes: {view['phonemes']}")
    truth = view["truth"].clone()
    frames = torch.stack([render_faces(view["coeffs"]), render_faces(truth)])
    display(animate_video(frames, titles=["generated", "the world's clip"], interval=80, scale=2.2))
    fig, axes = plt.subplots(1, 2, figsize=(11, 2.8))
    target = truth.clone()
    target[:, MOUTH_DIMS] = view["mouth_target"]
    coefficient_curves(axes[0], {"target": target, "generated": view["coeffs"]}, ("jaw_open", "mouth_corner"), "mouth")
    coefficient_curves(
        axes[1], {"real clip": truth, "generated": view["coeffs"]}, ("brow_raise", "brow_furrow"), "brows"
    )
    fig.tight_layout()
    display(fig)
    plt.close(fig)


def talking_face_explorer(models: dict, sentence: int = 0):
    """The main widget of chapter 07."""
    import ipywidgets as W

    from ..widgets import FunctionView

    controls = {
        "sentence": W.IntSlider(value=sentence, min=0, max=50, description="sentence", continuous_update=False),
        "emotion": W.ToggleButtons(options=list(EMOTIONS), value="happy", description="emotion"),
        "intensity": W.FloatSlider(
            value=0.8, min=0.0, max=1.0, step=0.1, description="intensity", continuous_update=False
        ),
        "guidance_scale": W.FloatSlider(
            value=DEFAULT_GUIDANCE_SCALE, min=0.0, max=4.0, step=0.5, description="style w", continuous_update=False
        ),
        "refiner": W.Checkbox(value=True, description="lip refiner"),
        "system": W.ToggleButtons(options=list(SYSTEMS), value="EmoDiff", description="system"),
        "sample": W.IntSlider(value=0, min=0, max=20, description="sample", continuous_update=False),
    }
    return FunctionView(
        controls,
        lambda **v: talking_view(models, **v),
        render_view,
        title="A talking face: audio → EmoDiff (+ lip refiner), in the style of a clip of the chosen emotion",
    )


__all__ = ["SYSTEMS", "render_view", "talking_face_explorer", "talking_view"]
