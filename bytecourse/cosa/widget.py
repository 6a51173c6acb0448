"""Chapter 08's widget: an Events clip, its frames in an order the learner sets (or shuffles) → each regime's ITM
score for the true paragraph with the frames in that order, against the true order, and its generated caption."""

from __future__ import annotations

import torch

from .. import seeds
from ..validation import check_int
from ..worlds.events import EventsConfig, make_events
from .train import REGIME_TITLES

WIDGET_STREAM = seeds.COSA_EVAL + 50_000  # the widget's clips: held out, and apart from the evaluation's


def parse_order(order: str, frames: int) -> torch.Tensor:
    """``"0 2 1 3"`` → a permutation of ``range(frames)``; anything else → one clear ``ValueError``."""
    try:
        idx = [int(t) for t in order.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"order must be frame numbers separated by spaces, got {order!r}") from None
    if sorted(idx) != list(range(frames)):
        raise ValueError(f"order must list each of the frames 0–{frames - 1} once, got {order!r}")
    return torch.tensor(idx)


def random_order(frames: int, seed: int) -> str:
    """A shuffled order (never the identity), as the order box writes it."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(frames, generator=g)
        if perm.tolist() != list(range(frames)):
            return " ".join(map(str, perm.tolist()))


@torch.no_grad()
def order_view(models: dict, clip: int = 0, frames: int = 6, order: str | None = None) -> dict:
    """Pure function behind the widget. For the clip ``clip`` of ``frames`` frames, each regime's scores of the true
    paragraph with the frames as they came and in ``order`` — the captioning mode's mean log-likelihood of the
    paragraph (what the chapter's order verdicts read) and ITM's ``log p(match)`` — and its greedy caption of the
    frames in ``order``."""
    clip = check_int("clip", clip, 0, 10_000)
    frames = check_int("frames", frames, 4, 8)
    batch = make_events(1, WIDGET_STREAM + clip, EventsConfig(frames=frames))
    perm = parse_order(order if order is not None else " ".join(map(str, range(frames))), frames)
    video, shown = batch.videos, batch.videos[:, perm]
    paragraph = batch.paragraphs[0]
    rows = []
    for regime, model in models.items():
        cap_true = float(model.caption_logprob(video, [paragraph])[0])
        cap_now = float(model.caption_logprob(shown, [paragraph])[0])
        true = float(model.itm_score(video, [paragraph])[0])
        now = float(model.itm_score(shown, [paragraph])[0])
        rows.append(
            {
                "regime": regime,
                "title": REGIME_TITLES.get(regime, regime),
                "caption_true_order": cap_true,
                "caption_this_order": cap_now,
                "caption_prefers_true": cap_true > cap_now + 1e-6,
                "true_order": true,
                "this_order": now,
                "prefers_true": true > now + 1e-6,
                "caption": model.generate(shown)[0],
            }
        )
    return {
        "settings": {"clip": clip, "frames": frames, "order": " ".join(map(str, perm.tolist()))},
        "paragraph": paragraph,
        "events": batch.events[0],
        "shown": shown[0],
        "identity": perm.tolist() == list(range(frames)),
        "rows": rows,
    }


def render_view(view: dict) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    from ..viz import image_grid

    s = view["settings"]
    fig = image_grid(view["shown"], titles=[f"frame {i}" for i in s["order"].split()], ncols=8, scale=1.3)
    display(fig)
    plt.close(fig)
    print(f"true paragraph: {view['paragraph']}")
    print(f"order shown: {s['order']}" + (" (the true order)" if view["identity"] else " (shuffled)"))
    if not view["identity"]:
        print("✓: the regime scores the true order above the order shown; ✗: it does not")
    lines = [
        "| regime | caption log-lik., true order | caption log-lik., this order | ITM log p(match), true order "
        "| ITM log p(match), this order | caption of the frames shown |"
    ]
    lines.append("|---|---|---|---|---|---|")

    def mark(prefers: bool) -> str:
        return "" if view["identity"] else (" ✓" if prefers else " ✗")

    for r in view["rows"]:
        lines.append(
            f"| {r['title']} | {r['caption_true_order']:.3f} | {r['caption_this_order']:.3f}"
            f"{mark(r['caption_prefers_true'])} | {r['true_order']:.3f} | {r['this_order']:.3f}"
            f"{mark(r['prefers_true'])} | {r['caption']} |"
        )
    display(Markdown("\n".join(lines)))


def order_explorer(models: dict, clip: int = 0):
    """The main widget of chapter 08: a clip slider, a frame-count slider and the order box, with buttons that
    shuffle the frames or put them back."""
    import ipywidgets as W

    from ..widgets import FunctionView

    controls = {
        "clip": W.IntSlider(value=clip, min=0, max=50, description="clip", continuous_update=False),
        "frames": W.IntSlider(value=6, min=4, max=8, description="frames", continuous_update=False),
        "order": W.Text(value="0 1 2 3 4 5", description="order", continuous_update=False),
    }
    view = FunctionView(
        controls,
        lambda **v: order_view(models, **v),
        render_view,
        title="Same frames, another order: which regime notices (caption likelihood, ITM), and what does it caption?",
    )
    shuffles = {"n": 0}

    def shuffle(_=None):
        shuffles["n"] += 1
        controls["order"].value = random_order(controls["frames"].value, 1000 * controls["clip"].value + shuffles["n"])

    def restore(_=None):
        controls["order"].value = " ".join(map(str, range(controls["frames"].value)))

    def on_frames(change):  # a new frame count: back to the true order of the new clip length
        restore()

    controls["frames"].unobserve(view._on_change, names="value")
    controls["frames"].observe(on_frames, names="value")
    shuffle_button = W.Button(description="shuffle the frames")
    restore_button = W.Button(description="true order")
    shuffle_button.on_click(shuffle)
    restore_button.on_click(restore)
    view.widget.children = (
        *view.widget.children[:1],
        W.HBox([shuffle_button, restore_button]),
        *view.widget.children[1:],
    )
    view.shuffle, view.restore = shuffle, restore
    return view


__all__ = ["order_explorer", "order_view", "parse_order", "random_order", "render_view"]
