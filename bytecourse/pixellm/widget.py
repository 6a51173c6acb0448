"""Chapter 10's widget: an image of the world, a question (picked from those the grammar can ask of it, or typed and
validated against the grammar) → each shipped arm's generated answer, its masks in one colour per target, the true
masks, and the matched IoU of every target."""

from __future__ import annotations

import torch

from .. import seeds
from ..validation import check_int
from ..worlds import make_shapes
from .data import (
    COLOURS,
    PLURALS,
    RELATIONS,
    SHAPES,
    TEMPLATES,
    TOUCHING_WORLD,
    WORLD,
    describe,
    parse_question,
    scenes_of,
    targets_of,
)
from .evaluate import answer, hungarian, match_cost
from .train import ARM_TITLES

WIDGET_STREAM = seeds.PIXELLM_EVAL + 50_000  # the widget's images: held out, apart from the evaluation's
MASK_COLOURS = torch.tensor(
    [[1.0, 0.5, 0.0], [0.0, 0.9, 1.0], [1.0, 0.0, 0.9], [0.6, 1.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.3, 1.0]]
)


def world_image(image: int, touching: bool = False):
    """Image ``image`` of the widget's stream (with a touching pair if ``touching``) and its scene."""
    image = check_int("image", image, 0, 100_000)
    batch = make_shapes(1, WIDGET_STREAM + 2 * image + int(touching), TOUCHING_WORLD if touching else WORLD)
    return batch, scenes_of(batch)[0]


def questions_for(scene) -> list[str]:
    """Every question of the grammar that applies to ``scene`` with at least one target (slots from its objects)."""
    out = []
    for name, template in TEMPLATES.items():
        for i in range(len(scene)):
            for rel in RELATIONS if name == "relation" else ["left of"]:
                q = template.format(
                    colour=COLOURS[scene.colours[i]],
                    shape=SHAPES[scene.shapes[i]],
                    shapes=PLURALS[scene.shapes[i]],
                    relation=rel,
                )
                try:
                    if targets_of(scene, q) and q not in out:
                        out.append(q)
                except ValueError:
                    continue
    return out


def overlay(image: torch.Tensor, masks: torch.Tensor, alpha: float = 0.6) -> torch.Tensor:
    """``image (3, H, W)`` with each of ``masks (n, H, W)`` (bool) painted in its own colour."""
    out = image.clone()
    for k, m in enumerate(masks):
        c = MASK_COLOURS[k % len(MASK_COLOURS)][:, None, None]
        out = torch.where(m[None], (1 - alpha) * out + alpha * c, out)
    return out


@torch.no_grad()
def answer_view(models: dict, image: int = 0, touching: bool = False, question: str = "", typed: str = "") -> dict:
    """Pure function behind the widget: ``typed`` (if given) or ``question`` asked of image ``image``; for every
    arm its generated answer, its masks, and each true target's matched IoU (Hungarian, as the evaluation)."""
    batch, scene = world_image(image, touching)
    asked = typed.strip() or question
    if not asked:
        asked = questions_for(scene)[0]
    parse_question(asked)  # one clear ValueError for a question outside the grammar
    try:
        hits = targets_of(scene, asked)
    except ValueError as e:
        raise ValueError(f"this question does not apply to image {image}: {e}") from None
    keep = batch.present[0].nonzero().flatten()
    truth = batch.instance_masks[0, keep][hits]
    rows = []
    for arm, model in models.items():
        got = answer(model, batch.images, [asked])
        logits = got["masks"][0]
        ious = [0.0] * len(truth)
        if len(logits) and len(truth):
            for i, j in hungarian(match_cost(logits, truth)):
                pred = logits[i] > 0
                ious[j] = float((pred & truth[j]).sum()) / max(float((pred | truth[j]).sum()), 1.0)
        rows.append(
            {
                "arm": arm,
                "title": ARM_TITLES.get(arm, arm),
                "text": got["texts"][0],
                "masks": logits > 0,
                "ious": ious,
                "spare": max(len(logits) - len(truth), 0),
            }
        )
    return {
        "settings": {"image": image, "touching": touching, "question": asked},
        "image": batch.images[0],
        "truth": truth,
        "targets": [describe(scene, i) for i in hits],
        "rows": rows,
    }


def render_view(view: dict) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    from ..viz import image_grid

    images = [view["image"], overlay(view["image"], view["truth"])]
    titles = ["image", "truth"]
    for r in view["rows"]:
        images.append(overlay(view["image"], r["masks"]))
        titles.append(r["arm"])
    fig = image_grid(torch.stack(images), titles=titles, ncols=len(images), scale=2.0)
    display(fig)
    plt.close(fig)
    lines = [f"**question:** {view['settings']['question']}  \n**true targets:** {'; '.join(view['targets'])}", ""]
    lines += ["| arm | answer | matched IoU per true target | spare masks |", "|---|---|---|---|"]
    for r in view["rows"]:
        ious = ", ".join(f"{x:.2f}" for x in r["ious"])
        lines.append(f"| {r['title']} | {r['text']} | {ious} | {r['spare']} |")
    display(Markdown("\n".join(lines)))


def segmentation_explorer(models: dict, image: int = 0):
    """The main widget of chapter 10: an image slider, a touching-pair switch, the questions that apply to the
    image, and a box to type one's own."""
    import ipywidgets as W

    from ..widgets import FunctionView

    first = questions_for(world_image(image)[1])
    controls = {
        "image": W.IntSlider(value=image, min=0, max=200, description="image", continuous_update=False),
        "touching": W.Checkbox(value=False, description="with a touching pair"),
        "question": W.Dropdown(options=first, value=first[0], description="question", layout=W.Layout(width="520px")),
        "typed": W.Text(
            value="", description="or type", placeholder="segment every red thing", continuous_update=False
        ),
    }
    view = FunctionView(
        controls,
        lambda **v: answer_view(models, **v),
        render_view,
        title="Ask for several things at once: each codebook group the model writes becomes one mask",
    )

    def new_image(_change=None):  # the questions that apply to the new image, then one refresh
        qs = questions_for(world_image(controls["image"].value, controls["touching"].value)[1])
        controls["question"].unobserve(view._on_change, names="value")
        controls["question"].options = qs
        controls["question"].value = qs[0]
        controls["question"].observe(view._on_change, names="value")
        view.refresh()

    for name in ("image", "touching"):
        controls[name].unobserve(view._on_change, names="value")
        controls[name].observe(new_image, names="value")
    view.new_image = new_image
    return view


__all__ = ["answer_view", "overlay", "questions_for", "render_view", "segmentation_explorer", "world_image"]
