"""Chapter 05's widget: a held-out identity, a motion, the window size and overlap, shared noise on or off → the
animation beside the world's exact one, with a per-frame error plot whose window seams are marked."""

from __future__ import annotations

import torch

from .. import seeds
from ..diffusion.sampling import to_model_space
from ..validation import check_choice, check_flag, check_int
from ..worlds.puppet import MOTIONS, NUM_IDENTITIES, TRAIN_IDENTITIES, PuppetConfig, make_puppets
from .evaluate import GUIDANCE, STEPS, per_frame_errors, score, seam_pairs
from .pipeline import animate, context_windows

#: the held-out identities the widget offers
IDENTITIES = tuple(range(TRAIN_IDENTITIES, TRAIN_IDENTITIES + 12))


@torch.no_grad()
def animation_view(
    models: dict,
    identity: int = IDENTITIES[0],
    motion: str = "walk",
    window: int = 8,
    overlap: int = 2,
    shared_noise: bool = True,
    temporal: bool = True,
    frames: int = 24,
    steps: int = STEPS,
    seed: int = 0,
) -> dict:
    """Pure function behind the widget: ``identity`` performing ``motion`` for ``frames`` frames, animated from a
    reference of that identity in another pose, and how far each frame is from the exact animation."""
    identity = check_int("identity", identity, TRAIN_IDENTITIES, NUM_IDENTITIES - 1)
    motion = check_choice("motion", motion, MOTIONS)
    frames = check_int("frames", frames, 2, 96)
    shared_noise, temporal = check_flag("shared_noise", shared_noise), check_flag("temporal", temporal)
    windows = context_windows(frames, window, overlap)  # validates window and overlap
    batch = make_puppets(
        1,
        seeds.MAGICANIMATE_EVAL + 90_000 + identity,
        PuppetConfig(frames=frames),
        identities=[identity],
        motions=[motion],
        split="eval",
    )
    video = animate(
        models["temporal"],
        to_model_space(batch.reference),
        batch.densepose(),
        steps=steps,
        guidance_scale=GUIDANCE,
        window=window,
        overlap=overlap,
        shared_noise=shared_noise,
        temporal=temporal,
        seed=seeds.MAGICANIMATE_EVAL + 95_000 + seed,
    )
    errors = per_frame_errors(video, batch.frames)
    return {
        "settings": {
            "identity": identity,
            "motion": motion,
            "window": window,
            "overlap": overlap,
            "shared_noise": shared_noise,
            "temporal": temporal,
            "frames": frames,
        },
        "video": video[0],
        "truth": batch.frames[0],
        "reference": batch.reference[0],
        "pose": batch.densepose()[0] * 0.5 + 0.5,
        "windows": windows,
        "seams": seam_pairs(windows, frames),
        "frame_l1": errors["l1"],
        "frame_temporal": errors["temporal"],
        "metrics": score(video, batch, windows),
    }


def render_view(view: dict) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display

    from ..viz import animate_video

    s, m = view["settings"], view["metrics"]
    print(
        f"identity {s['identity']} · {s['motion']} · {s['frames']} frames in {len(view['windows'])} windows of "
        f"{s['window']} (overlap {s['overlap']}) · {'shared' if s['shared_noise'] else 'independent'} noise · "
        f"temporal modules {'on' if s['temporal'] else 'off'} → L1 {m['l1']:.3f} · SSIM {m['ssim']:.3f} · "
        f"temporal error {m['temporal_error']:.4f} · seam ratio {m['seam_ratio']:.2f}"
    )
    n = view["video"].shape[0]
    ref = view["reference"][None].expand(n, -1, -1, -1)
    clips = torch.stack([ref, view["pose"], view["video"], view["truth"]])
    display(animate_video(clips, titles=["reference", "pose (IUV)", "MagicAnimate", "exact"], interval=150))
    fig, ax = plt.subplots(figsize=(9, 2.6))
    ax.plot(range(n), view["frame_l1"].numpy(), label="L1 of the frame", marker=".")
    ax.plot(
        [k + 0.5 for k in range(n - 1)], view["frame_temporal"].numpy(), label="temporal error |Δx̂ − Δx|", marker="."
    )
    for i, k in enumerate(view["seams"]):
        ax.axvline(k - 0.5, color="grey", ls=":", lw=1, label="window seam" if i == 0 else None)
    ax.set_xlabel("frame")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    display(fig)
    plt.close(fig)


def animation_explorer(models: dict):
    """The main widget of chapter 05."""
    import ipywidgets as W

    from ..widgets import FunctionView

    controls = {
        "identity": W.Dropdown(
            options=[(f"identity {i}", i) for i in IDENTITIES], value=IDENTITIES[0], description="identity"
        ),
        "motion": W.ToggleButtons(options=list(MOTIONS), value="walk", description="motion"),
        "window": W.IntSlider(value=8, min=2, max=16, description="window", continuous_update=False),
        "overlap": W.IntSlider(value=2, min=0, max=7, description="overlap", continuous_update=False),
        "shared_noise": W.Checkbox(value=True, description="shared initial noise"),
        "temporal": W.Checkbox(value=True, description="temporal modules"),
    }
    return FunctionView(
        controls,
        lambda **v: animation_view(models, **v),
        render_view,
        title="Animate a held-out puppet: reference + pose sequence → video, windows averaged where they overlap",
    )


__all__ = ["IDENTITIES", "animation_explorer", "animation_view", "render_view"]
