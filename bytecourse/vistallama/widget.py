"""Chapter 09's widget: pick a narrator and a generated position → where its attention goes."""

from __future__ import annotations

import torch

from .. import seeds
from .data import FRAMES_PER_SEGMENT, check_narration, decode_ids, encode_words, make_episodes


@torch.no_grad()
def attention_view(narrators: dict, variant: str, seed: int = 0, segments: int = 4, fill: int = 64) -> dict:
    """Pure function behind the widget: one narration, each generated token's attention over the visual tokens
    (grouped per frame) and the oracle's verdict on every stated fact."""
    if variant not in narrators:
        raise ValueError(f"variant must be one of {sorted(narrators)}, got {variant!r}")
    nar = narrators[variant]
    ep = make_episodes(1, seeds.VISTALLAMA_EVAL + 900_000 + seed, (segments, segments))
    ids, mass = nar.generate(
        ep.videos[:, : segments * FRAMES_PER_SEGMENT],
        [fill],
        [encode_words(["describe"])],
        max_new=8 * segments + 8,
        output_attentions=True,
    )
    rows = torch.stack(nar.last_rows) if nar.last_rows else torch.zeros(0, 1)
    frames = segments * FRAMES_PER_SEGMENT
    per_frame = rows.view(rows.shape[0], frames, -1).sum(-1) if rows.numel() else rows
    narration = decode_ids(ids)
    words = [w for w in (decode_ids([t]) for t in ids) if w]
    return {
        "variant": variant,
        "segments": segments,
        "narration": narration,
        "words": words,
        "mass": mass,
        "per_frame": per_frame,
        "facts": check_narration(narration, ep, 0),
        "truth": ep.narrations[0],
        "video": ep.videos[0, :frames],
    }


def render_attention(view: dict, position: int) -> None:
    import html

    import matplotlib.pyplot as plt
    from IPython.display import HTML, display

    pos = min(max(0, position), max(0, len(view["words"]) - 1))
    bad_items = {f.item for f in view["facts"] if not f.true}
    items = view["narration"].split(" then ")
    marked = " then ".join(
        f"<span style='background:#f4b6b6'>{html.escape(t)}</span>" if k in bad_items else html.escape(t)
        for k, t in enumerate(items)
    )
    total = len(view["facts"])
    wrong = sum(not f.true for f in view["facts"])
    print(
        f"{view['variant']} · token {pos + 1}/{len(view['words'])} "
        f"“{view['words'][pos] if view['words'] else ''}” · attention on visual tokens "
        f"{view['mass'][pos] if view['mass'] else 0:.3f} · facts rejected {wrong}/{total} · K = {view['segments']} "
        f"segments (training saw 2–4)"
    )
    display(HTML(f"<div><b>generated:</b> {marked}</div><div><b>truth:</b> {html.escape(view['truth'])}</div>"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 2.6), gridspec_kw={"width_ratios": [3, 2]})
    if len(view["per_frame"]):
        axes[0].imshow(view["per_frame"].T.numpy(), aspect="auto", cmap="viridis")
        axes[0].axvline(pos, color="w", lw=1)
    axes[0].set_xlabel("generated token")
    axes[0].set_ylabel("frame")
    axes[0].set_title("attention over each frame's visual tokens", fontsize=9)
    axes[1].plot(view["mass"], "o-", ms=3)
    axes[1].axvline(pos, color="k", lw=0.8)
    axes[1].set_xlabel("generated token")
    axes[1].set_ylabel("mass on visual tokens")
    fig.tight_layout()
    display(fig)
    plt.close(fig)


def narration_explorer(narrators: dict, seed: int = 0):
    """The main widget of chapter 09: pick a narrator (RoPE / EDVT × sequential / independent projector), the
    episode's length in segments (K = 2–12; training saw 2–4) and a generated token."""
    import ipywidgets as W

    from ..widgets import FunctionView

    cache: dict = {}

    def compute(variant, segments, position, seed):
        key = (variant, segments, seed)
        if key not in cache:
            cache[key] = attention_view(narrators, variant, seed, segments)
        return {"view": cache[key], "position": position}

    controls = {
        "variant": W.ToggleButtons(options=list(narrators), value="edvt", description="narrator"),
        "segments": W.IntSlider(value=4, min=2, max=12, description="segments K", continuous_update=False),
        "position": W.IntSlider(value=0, min=0, max=104, description="token", continuous_update=False),
        "seed": W.IntSlider(value=seed, min=0, max=20, description="episode", continuous_update=False),
    }
    return FunctionView(
        controls,
        compute,
        lambda r: render_attention(r["view"], r["position"]),
        title="Where does each generated word look? RoPE vs equal-distance visual tokens",
    )
