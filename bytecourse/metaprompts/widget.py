"""Chapter 03's widget: an image of the perception world → the Meta Prompts model's mask and depth beside the truth,
its per-class IoU, and where a chosen prompt looks (its cross-attention over the image, last loop)."""

from __future__ import annotations

import torch

from .. import seeds, text
from ..diffusion.attention import Attention
from ..validation import check_flag, check_int
from ..worlds import ShapesConfig, make_shapes
from .evaluate import confusion, iou_from_confusion
from .models import LABEL_SETS

WIDGET_SEED = seeds.METAPROMPTS_EVAL + 50_000  # the widget's images (not among the evaluation images)
CLASS_NAMES = ("background", *text.SHAPE_NAMES)


class AttentionRecorder:
    """A cross-attention processor that computes the softmax explicitly and keeps the map, averaged over heads:
    ``maps[name] = (B, H·W, N)`` — which context token (prompt) each location attends to."""

    def __init__(self, name: str, store: dict):
        self.name, self.store = name, store

    def __call__(self, attn: Attention, x, context=None, **_):
        ctx = x if context is None else context
        q, k, v = attn.split_heads(attn.to_q(x)), attn.split_heads(attn.to_k(ctx)), attn.split_heads(attn.to_v(ctx))
        probs = (q @ k.transpose(-1, -2) * attn.head_dim**-0.5).softmax(-1)
        self.store[self.name] = probs.mean(1).detach()
        return attn.to_out(attn.merge_heads(probs @ v))


def prompt_attention(model, images: torch.Tensor, loops: int | None = None) -> dict[str, torch.Tensor]:
    """Run ``model`` and return every cross-attention's map of the last loop, ``{stage: (B, N, h, w)}``."""
    from ..diffusion.attention import SDPAProcessor

    store: dict[str, torch.Tensor] = {}
    transformers = model.backbone.unet.spatial_transformers()
    for name, block in transformers.items():
        block.cross_attn.set_processor(AttentionRecorder(name, store))
    try:
        with torch.no_grad():
            out = model(images, loops)
    finally:
        for block in transformers.values():
            block.cross_attn.set_processor(SDPAProcessor())
    maps = {}
    for name, m in store.items():
        side = int(m.shape[1] ** 0.5)
        maps[name] = m.transpose(1, 2).reshape(m.shape[0], m.shape[2], side, side)
    return maps | {"_out": out}


def perception_view(
    models: dict, seed: int = 0, textured: bool = True, loops: int = 3, rearrange: bool = True, prompt: int = 0
) -> dict:
    """Pure function behind the widget. ``models``: the shipped arms by name (``loops_3``: meta prompts +
    re-arrangement, trained with 3 loops; ``meta``: meta prompts without re-arrangement, 1 loop)."""
    seed = check_int("seed", seed, 0, 10_000)
    textured, rearrange = check_flag("textured", textured), check_flag("rearrange", rearrange)
    loops = check_int("loops", loops, 1, 3)
    model = models["loops_3" if rearrange else "meta"]
    run_loops = min(loops, model.config.loops)
    prompt = check_int("prompt", prompt, 0, model.config.n_prompts - 1)
    world = ShapesConfig.perception() if textured else ShapesConfig.perception(chromatic=False, noise=0.0)
    batch = make_shapes(1, WIDGET_SEED + seed, world)
    res = prompt_attention(model, batch.images, run_loops)
    out = res.pop("_out")
    pred = out["logits"].argmax(1)[0]
    iou = iou_from_confusion(confusion(pred, batch.class_mask[0], LABEL_SETS["shape"]))
    attention = torch.stack(
        [
            torch.nn.functional.interpolate(m[:, prompt : prompt + 1], size=32, mode="bilinear")[0, 0]
            for m in res.values()
        ]
    ).mean(0)
    return {
        "settings": {
            "seed": seed,
            "textured": textured,
            "loops": run_loops,
            "asked_loops": loops,
            "rearrange": rearrange,
            "prompt": prompt,
        },
        "image": batch.images[0],
        "caption": batch.captions[0],
        "truth": batch.class_mask[0],
        "pred": pred,
        "depth_truth": batch.depth[0],
        "depth_pred": out["depth"][0],
        "iou": {CLASS_NAMES[i]: float(v) for i, v in enumerate(iou.tolist())},
        "attention": attention,
        "trained_loops": model.config.loops,
    }


def render_view(view: dict) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display

    s = view["settings"]
    note = ""
    if s["asked_loops"] != s["loops"]:
        note = f" (this model was trained with {view['trained_loops']} loop; it runs {s['loops']})"
    ious = ", ".join(f"{k} {v:.2f}" for k, v in view["iou"].items() if v == v)
    print(
        f"{'meta prompts + re-arrangement' if s['rearrange'] else 'meta prompts, no re-arrangement'} · "
        f"{s['loops']} loop(s){note} · IoU: {ious}"
    )
    print(f"the world's caption: {view['caption']}")
    fig, ax = plt.subplots(1, 6, figsize=(15, 2.8))
    panels = [
        (view["image"].permute(1, 2, 0), "image", {}),
        (view["truth"], "true mask", {"vmin": 0, "vmax": 3, "cmap": "tab10"}),
        (view["pred"], "predicted mask", {"vmin": 0, "vmax": 3, "cmap": "tab10"}),
        (view["depth_truth"], "true depth", {"vmin": 0, "vmax": 1, "cmap": "magma"}),
        (view["depth_pred"], "predicted depth", {"vmin": 0, "vmax": 1, "cmap": "magma"}),
        (view["attention"], f"where prompt {s['prompt']} looks", {"cmap": "viridis"}),
    ]
    for a, (img, title, kw) in zip(ax, panels):
        a.imshow(img.numpy() if hasattr(img, "numpy") else img, **kw)
        a.set_title(title, fontsize=9)
        a.axis("off")
    fig.tight_layout()
    display(fig)
    plt.close(fig)


def perception_explorer(models: dict, seed: int = 0):
    """The main widget of chapter 03."""
    import ipywidgets as W

    from ..widgets import FunctionView

    n = models["loops_3"].config.n_prompts
    controls = {
        "seed": W.IntSlider(value=seed, min=0, max=100, description="image", continuous_update=False),
        "textured": W.Checkbox(value=True, description="textured background"),
        "loops": W.IntSlider(value=3, min=1, max=3, description="loops", continuous_update=False),
        "rearrange": W.Checkbox(value=True, description="re-arrangement"),
        "prompt": W.IntSlider(value=0, min=0, max=n - 1, description="prompt", continuous_update=False),
    }
    return FunctionView(
        controls,
        lambda **v: perception_view(models, **v),
        render_view,
        title="Meta Prompts: a clean image through the diffusion UNet → mask and depth",
    )


__all__ = ["AttentionRecorder", "perception_explorer", "perception_view", "prompt_attention", "render_view"]
