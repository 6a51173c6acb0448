"""The chapter's widget: the box-trajectory editor, a thin view over two pure functions.

:func:`plan_request` turns the editor's settings (start and end boxes, an optional waypoint, key-frame or
motion-path mode, soft boxes on/off) into the :class:`~.boxes.BoxConditions` the model reads, and
:func:`generate_request` samples a video for it and measures, with the oracle, where the object went.
"""

from __future__ import annotations

import torch

from .. import text
from ..oracle import box_iou, detect_objects
from ..validation import check_int
from .boxes import (
    ID_COLOURS,
    ID_NAMES,
    SOFT_MARGIN_MEAN,
    BoxConditions,
    empty_conditions,
    interpolate_keyframes,
    motion_path,
    relax,
    to_frame,
)

EDITOR_CAPTIONS = (
    "a red circle moves right",
    "a blue square moves down",
    "a green triangle curves left",
    "a yellow circle bounces",
    "a cyan square enters from the left",
    "a magenta triangle moves up and a yellow square moves left",
    "a red square moves right and a blue circle moves down",
)


def caption_objects(caption: str) -> list[str]:
    """The caption's objects, in slot order (slot j ↔ ID colour j). Raises ``ValueError`` for a caption that
    is not a Motion caption ("a <colour> <shape> <motion> [and ...]") in the world's vocabulary."""
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"caption must be a non-empty Motion caption, got {caption!r}")
    try:
        text.encode([caption], 24)
        objects = text.parse_motion_caption(caption)
    except ValueError as e:
        raise ValueError(f"caption {caption!r} is not a Motion caption: {e}") from None
    return [f"{text.COLOUR_NAMES[c]} {text.SHAPE_NAMES[s]}" for c, s, _, _ in objects]


def box_from_centre(cx: float, cy: float, size: float) -> torch.Tensor:
    """A square box of side ``size`` around (cx, cy), cut at the frame (the border convention)."""
    h = size / 2
    return to_frame(torch.tensor([cx - h, cy - h, cx + h, cy + h]))


def plan_request(
    caption: str,
    obj: int,
    start: tuple[float, float],
    end: tuple[float, float],
    size: float = 0.3,
    waypoint: tuple[float, float] | None = None,
    mode: str = "key frames",
    soft: bool = True,
    margin: float = SOFT_MARGIN_MEAN,
    frames: int = 8,
) -> dict:
    """The request for object ``obj`` of ``caption``: a box on the first and last frame (and the waypoint on the
    middle frame), interpolated (``"key frames"``) or slid along the path at constant speed
    (``"motion path"``), then relaxed into soft boxes except where drawn. Other objects stay unconstrained."""
    objects = caption_objects(caption)
    frames = check_int("frames", frames, 2)
    obj = check_int("object", obj, 0, len(objects) - 1)
    if not 0 <= obj < len(objects):
        raise ValueError(f"object must be in [0, {len(objects)}) for {caption!r}, got {obj}")
    if mode not in ("key frames", "motion path"):
        raise ValueError(f"mode must be 'key frames' or 'motion path', got {mode!r}")
    if not 0.05 <= size <= 1.0:
        raise ValueError(f"size must be in [0.05, 1], got {size}")
    first, last = box_from_centre(*start, size), box_from_centre(*end, size)
    if mode == "key frames":
        keys = {0: first, frames - 1: last}
        if waypoint is not None:
            keys[frames // 2] = box_from_centre(*waypoint, size)
        hard, drawn = interpolate_keyframes(keys, frames)
    else:
        points = [start] + ([waypoint] if waypoint is not None else []) + [end]
        hard, drawn = motion_path(first, torch.tensor(points), frames)
    boxes = torch.where(drawn[:, None], hard, relax(hard, margin)) if soft else hard
    cond = empty_conditions(1, frames)
    cond.ids[0, : len(objects)] = torch.arange(len(objects))
    cond.boxes[0, :, obj] = boxes
    cond.hard[0, :, obj] = drawn.float() if soft else 1.0
    cond.active[0, :, obj] = True
    return {
        "caption": caption,
        "object": obj,
        "object_name": objects[obj],
        "hard": hard,
        "boxes": boxes,
        "drawn": drawn,
        "cond": cond.validate(frames),
        "soft": soft,
        "mode": mode,
    }


def generate_request(
    model, plan: dict, *, seed: int = 0, box_guidance_scale: float = 1.0, guidance_scale: float = 2.0, steps: int = 20
) -> dict:
    """Sample one video for a plan; detect the constrained object (by its colour) on every frame and score the
    IoU of its box against the requested (hard) box."""
    from .pipeline import generate_video

    tokens = text.encode([plan["caption"]], model.config.caption_length)
    video = generate_video(
        model,
        tokens,
        plan["cond"],
        steps=steps,
        box_guidance_scale=box_guidance_scale,
        guidance_scale=guidance_scale,
        seed=seed,
    )[0]
    colour = text.COLOUR_NAMES.index(plan["object_name"].split()[0])
    found = torch.zeros(video.shape[0], 4)
    iou = torch.zeros(video.shape[0])
    for f, dets in enumerate(detect_objects(video)):
        match = [o for o in dets if o.colour == colour]
        if match:
            found[f] = torch.tensor(match[0].box)
            iou[f] = box_iou(found[f][None], plan["hard"][f][None])[0, 0]
    return {
        "video": video,
        "detected": found,
        "iou": iou,
        "mean_iou": float(iou.mean()),
        "plan": plan,
        "seed": seed,
        "box_guidance_scale": box_guidance_scale,
    }


def render_plan(plan: dict) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display

    from ..viz import image_grid
    from ..worlds.render import PLAIN_BACKGROUND

    frames = plan["hard"].shape[0]
    blank = torch.full((frames, 3, 32, 32), PLAIN_BACKGROUND)
    idc = ID_COLOURS[plan["object"]].tolist()
    titles = [
        f"f{f}: {'drawn (hard)' if plan['drawn'][f] else ('soft' if plan['soft'] else 'hard')}" for f in range(frames)
    ]
    fig = image_grid(
        blank,
        titles,
        ncols=frames,
        scale=1.2,
        boxes=[[plan["hard"][f], plan["boxes"][f]] for f in range(frames)],
        box_colours=[["white", idc]] * frames,
        suptitle=f"request for the {plan['object_name']} (ID colour {ID_NAMES[plan['object']]}): "
        f"white = path, coloured = the box the model reads",
    )
    display(fig)
    plt.close(fig)


def render_generation(result: dict) -> None:
    from IPython.display import display

    from ..viz import animate_video

    plan = result["plan"]
    boxes = torch.stack([plan["hard"], result["detected"]], dim=1)[None]  # (1, T, 2, 4)
    titles = [f"frame {f}: IoU {float(v):.2f}" for f, v in enumerate(result["iou"])]
    print(
        f"“{plan['caption']}” · {plan['mode']}, {'soft' if plan['soft'] else 'hard'} boxes, box guidance "
        f"{result['box_guidance_scale']:g}, "
        f"seed {result['seed']} → mean IoU of the {plan['object_name']} {result['mean_iou']:.2f} "
        f"(first frame {float(result['iou'][0]):.2f}, last {float(result['iou'][-1]):.2f})"
    )
    display(
        animate_video(
            result["video"][None], boxes=boxes, box_colours=["white", "yellow"], frame_titles=titles, scale=3.0
        )
    )


class BoxTrajectoryEditor:
    """Sliders for the start/end boxes and a waypoint → a live preview of the request on every frame; the
    **Generate** button samples a video and shows the requested (white) and detected (yellow) boxes."""

    def __init__(self, model, seed: int = 0):
        import ipywidgets as W

        from ..widgets import FunctionView

        slider = lambda v, d: W.FloatSlider(
            value=v, min=0.0, max=1.0, step=0.05, description=d, continuous_update=False
        )  # noqa: E731
        self.controls = {
            "caption": W.Dropdown(options=EDITOR_CAPTIONS, value=EDITOR_CAPTIONS[0], description="caption"),
            "obj": W.Dropdown(
                options=[(n, i) for i, n in enumerate(caption_objects(EDITOR_CAPTIONS[0]))],
                value=0,
                description="object",
            ),
            "start_x": slider(0.25, "start x"),
            "start_y": slider(0.3, "start y"),
            "end_x": slider(0.75, "end x"),
            "end_y": slider(0.7, "end y"),
            "size": W.FloatSlider(
                value=0.35, min=0.15, max=0.6, step=0.05, description="box size", continuous_update=False
            ),
            "use_waypoint": W.Checkbox(value=False, description="waypoint on the middle frame"),
            "way_x": slider(0.8, "waypoint x"),
            "way_y": slider(0.2, "waypoint y"),
            "mode": W.ToggleButtons(options=["key frames", "motion path"], value="key frames", description="mode"),
            "soft": W.Checkbox(value=True, description="relax into soft boxes"),
        }
        self.gen_controls = {
            "box_guidance_scale": W.FloatSlider(
                value=1.0, min=0.0, max=6.0, step=0.5, description="box CFG", continuous_update=False
            ),
            "seed": W.IntSlider(value=seed, min=0, max=20, description="seed", continuous_update=False),
        }
        self.controls["caption"].observe(self._caption_changed, names="value")
        self.model = model
        self.preview = FunctionView(self.controls, self._plan, render_plan, title="Box-trajectory editor")
        self.generator = FunctionView(
            self.gen_controls,
            lambda **v: generate_request(model, self.preview.result, **v),
            render_generation,
            button="Generate",
        )
        self.widget = W.VBox([self.preview.widget, self.generator.widget])

    def _caption_changed(self, change) -> None:
        objects = caption_objects(change["new"])
        self.controls["obj"].options = [(n, i) for i, n in enumerate(objects)]
        self.controls["obj"].value = 0

    def _plan(
        self, caption, obj, start_x, start_y, end_x, end_y, size, use_waypoint, way_x, way_y, mode, soft
    ) -> dict:
        return plan_request(
            caption,
            obj,
            (start_x, start_y),
            (end_x, end_y),
            size,
            (way_x, way_y) if use_waypoint else None,
            mode,
            soft,
            frames=self.model.config.frames,
        )

    @property
    def plan(self) -> dict:
        return self.preview.result

    @property
    def result(self) -> dict:
        return self.generator.result

    def generate(self) -> dict:
        return self.generator.refresh()

    def show(self) -> BoxTrajectoryEditor:
        from IPython.display import display

        self.preview.refresh()
        self.generator.refresh()
        display(self.widget)
        return self


def box_trajectory_editor(model, seed: int = 0) -> BoxTrajectoryEditor:
    """The main widget of chapter 04."""
    return BoxTrajectoryEditor(model, seed)


__all__ = ["BoxConditions", "EDITOR_CAPTIONS", "box_trajectory_editor", "generate_request", "plan_request"]
