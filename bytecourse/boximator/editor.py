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
    BETWEEN,
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


#: The editor's default request (issue 14): the caption's object from the left third to the right third of the
#: frame at mid height, its box 0.3 × 0.3 of the frame (0.09 of its area, under 1/6).
DEFAULT_REQUEST = dict(caption=EDITOR_CAPTIONS[0], obj=0, start=(1 / 6, 0.5), end=(5 / 6, 0.5), size=0.3)


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


def parse_waypoints(spec: str) -> list[tuple[float, float]]:
    """``"x,y; x,y"`` (normalised) → points; the editor's waypoint field, written by clicks on the canvas."""
    if not isinstance(spec, str):
        raise ValueError(f"waypoints must be text like '0.5,0.2; 0.7,0.8', got {spec!r}")
    points = []
    for part in filter(None, (p.strip() for p in spec.replace("\n", ";").split(";"))):
        try:
            x, y = (float(v) for v in part.split(","))
        except ValueError:
            raise ValueError(f"a waypoint must be 'x,y' with numbers in [0, 1], got {part!r}") from None
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"waypoints must lie in the frame ([0, 1]), got {part!r}")
        points.append((x, y))
    return points


def format_waypoints(points) -> str:
    return "; ".join(f"{x:.2f},{y:.2f}" for x, y in points)


def plan_request(
    caption: str,
    obj: int,
    start: tuple[float, float],
    end: tuple[float, float],
    size: float = 0.3,
    waypoints=(),
    mode: str = "key frames",
    between: str = "soft",
    margin: float = SOFT_MARGIN_MEAN,
    frames: int = 8,
    end_size: float | None = None,
) -> dict:
    """The request for object ``obj`` of ``caption``: a box of side ``size`` centred at ``start`` on the first frame
    and one of side ``end_size`` (default ``size``) at ``end`` on the last; ``waypoints`` (points, or the editor's
    ``"x,y; x,y"`` text) are visited in order. ``"key frames"``: the waypoints are boxes on evenly spaced middle
    frames and every other frame is interpolated; ``"motion path"``: the start box slides along start → waypoints
    → end at constant speed. The frames not drawn then get ``between`` (:data:`~.boxes.BETWEEN`): relaxed by
    ``margin`` into soft boxes (the paper), no box, or the hard path. Other objects stay unconstrained."""
    objects = caption_objects(caption)
    frames = check_int("frames", frames, 2)
    obj = check_int("object", obj, 0, len(objects) - 1)
    if mode not in ("key frames", "motion path"):
        raise ValueError(f"mode must be 'key frames' or 'motion path', got {mode!r}")
    if between not in BETWEEN:
        raise ValueError(f"between must be one of {BETWEEN}, got {between!r}")
    end_size = size if end_size is None else end_size
    for name, v in (("size", size), ("end size", end_size)):
        if not 0.05 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0.05, 1], got {v}")
    points = parse_waypoints(waypoints) if isinstance(waypoints, str) else [tuple(p) for p in waypoints]
    if len(points) > frames - 2:
        raise ValueError(f"at most {frames - 2} waypoints fit between the first and the last frame, got {len(points)}")
    first, last = box_from_centre(*start, size), box_from_centre(*end, end_size)
    if mode == "key frames":
        keys = {0: first, frames - 1: last}
        for i, p in enumerate(points):  # waypoint i on frame round((i + 1)(T − 1)/(k + 1))
            s_i = size + (end_size - size) * (i + 1) / (len(points) + 1)
            keys[round((i + 1) * (frames - 1) / (len(points) + 1))] = box_from_centre(*p, s_i)
        hard, drawn = interpolate_keyframes(keys, frames)
    else:
        hard, drawn = motion_path(first, torch.tensor([start, *points, end]), frames)
    soft = between == "soft"
    boxes = torch.where(drawn[:, None], hard, relax(hard, margin)) if soft else hard
    cond = empty_conditions(1, frames)
    cond.ids[0, : len(objects)] = torch.arange(len(objects))
    cond.boxes[0, :, obj] = boxes
    cond.hard[0, :, obj] = drawn.float() if soft else 1.0
    cond.active[0, :, obj] = drawn if between == "none" else True
    return {
        "caption": caption,
        "object": obj,
        "object_name": objects[obj],
        "hard": hard,
        "boxes": boxes,
        "drawn": drawn,
        "waypoints": points,
        "cond": cond.validate(frames),
        "between": between,
        "margin": margin,
        "mode": mode,
    }


def describe_request(plan: dict) -> str:
    """One line a learner can read back: the boxes drawn on the first and last frame and the waypoints."""
    fmt = lambda b: "(" + ", ".join(f"{float(v):.2f}" for v in b) + ")"  # noqa: E731
    way = format_waypoints(plan["waypoints"]) or "none"
    return (
        f"request: the {plan['object_name']} from {fmt(plan['hard'][0])} to {fmt(plan['hard'][-1])} "
        f"(x0, y0, x1, y1) · waypoints {way} · {plan['mode']}, between drawn frames: {_between_words(plan)}"
    )


def generate_request(
    model, plan: dict, *, seed: int = 0, box_guidance_scale: float = 1.0, guidance_scale: float = 2.0, steps: int = 20
) -> dict:
    """Sample one video for a plan; detect the constrained object (by its colour) on every frame and score the
    IoU of its box against the requested (hard) box."""
    from .pipeline import BoximatorModel, generate_video

    tokens = text.encode([plan["caption"]], model.config.caption_length)
    video = generate_video(
        model,
        tokens,
        plan["cond"] if isinstance(model, BoximatorModel) else None,  # a bare base cannot read boxes
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


def _between_words(plan: dict) -> str:
    return {"soft": f"soft boxes (margin {plan['margin']:.3f})", "none": "no boxes", "hard": "hard boxes"}[
        plan["between"]
    ]


def _frame_word(plan: dict, f: int) -> str:
    if plan["drawn"][f]:
        return "drawn (hard)"
    return {"soft": "soft", "none": "no box", "hard": "hard"}[plan["between"]]


def render_plan(plan: dict) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display

    from ..viz import image_grid
    from ..worlds.render import PLAIN_BACKGROUND

    frames = plan["hard"].shape[0]
    blank = torch.full((frames, 3, 32, 32), PLAIN_BACKGROUND)
    idc = ID_COLOURS[plan["object"]].tolist()
    titles = [f"f{f}: {_frame_word(plan, f)}" for f in range(frames)]
    active = plan["cond"].active[0, :, plan["object"]]
    fig = image_grid(
        blank,
        titles,
        ncols=frames,
        scale=1.2,
        boxes=[[plan["hard"][f], plan["boxes"][f]] if active[f] else [plan["hard"][f]] for f in range(frames)],
        box_colours=[["white", idc] if active[f] else ["white"] for f in range(frames)],
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
    print(describe_request(plan))
    print(
        f"“{plan['caption']}” · {plan['mode']}, {_between_words(plan)} between drawn frames, box guidance "
        f"{result['box_guidance_scale']:g}, "
        f"seed {result['seed']} → mean IoU of the {plan['object_name']} {result['mean_iou']:.2f} "
        f"(first frame {float(result['iou'][0]):.2f}, last {float(result['iou'][-1]):.2f})"
    )
    display(
        animate_video(
            result["video"][None], boxes=boxes, box_colours=["white", "yellow"], frame_titles=titles, scale=3.0
        )
    )


CANVAS_PX = 256  # the enlarged first frame the learner draws on (32 px × 8)
TOOLS = ("start box", "end box", "waypoints")


def canvas_point(x: float, y: float, px: int = CANVAS_PX) -> tuple[float, float]:
    """Canvas pixels → a normalised frame point, clamped to the frame."""
    return min(max(x / px, 0.0), 1.0), min(max(y / px, 0.0), 1.0)


def dragged_box(anchor: tuple[float, float], point: tuple[float, float]) -> tuple[tuple[float, float], float]:
    """A drag from ``anchor`` to ``point`` (normalised) → the request's square box: its centre and side (the mean
    of the dragged rectangle's sides, at least 0.05)."""
    (ax, ay), (bx, by) = anchor, point
    side = max(0.05, min(1.0, (abs(bx - ax) + abs(by - ay)) / 2))
    return ((ax + bx) / 2, (ay + by) / 2), side


class BoxCanvas:
    """The editor's drawing surface (an ``ipycanvas.Canvas``): the enlarged first frame with the request drawn on it.

    With the tool **start box** or **end box**, a drag inside that box moves it and a drag elsewhere draws a new one
    (corner to corner); with **waypoints** each click adds a waypoint. The drawing writes the same controls the
    sliders do (``start_x``, ``start_y``, ``size`` / ``end_x``, ``end_y``, ``end_size`` / the waypoint text), so the
    request has one source. ``mouse_down/move/up`` take canvas pixels and are what the browser calls; tests call
    them directly."""

    def __init__(self, editor: BoxTrajectoryEditor):
        import ipywidgets as W
        from ipycanvas import Canvas

        self.editor = editor
        self.canvas = Canvas(width=CANVAS_PX, height=CANVAS_PX, layout=W.Layout(width=f"{CANVAS_PX}px"))
        self.tool = W.ToggleButtons(options=TOOLS, value="end box", description="draw")
        self.clear = W.Button(description="clear waypoints")
        self.clear.on_click(lambda _: self._write(waypoints=""))
        self.canvas.on_mouse_down(self.mouse_down)
        self.canvas.on_mouse_move(self.mouse_move)
        self.canvas.on_mouse_up(self.mouse_up)
        self._drag: tuple[str, tuple[float, float], tuple[float, float]] | None = None
        self.frame: torch.Tensor | None = None  # (3, H, W) in [0, 1]: the first frame shown under the drawing
        self.widget = W.VBox([self.tool, W.HBox([self.canvas, self.clear])])

    # -- mouse ---------------------------------------------------------------------------------------------------
    def _box(self, which: str) -> tuple[tuple[float, float], float]:
        c = self.editor.controls
        if which == "start box":
            return (c["start_x"].value, c["start_y"].value), c["size"].value
        return (c["end_x"].value, c["end_y"].value), c["end_size"].value

    def mouse_down(self, x: float, y: float) -> None:
        p = canvas_point(x, y)
        tool = self.tool.value
        if tool == "waypoints":
            points = parse_waypoints(self.editor.controls["waypoints"].value) + [p]
            self._write(waypoints=format_waypoints(points[-(self.editor.frames - 2) :]))
            return
        (cx, cy), side = self._box(tool)
        inside = abs(p[0] - cx) <= side / 2 and abs(p[1] - cy) <= side / 2
        self._drag = ("move" if inside else "draw", p, p)

    def mouse_move(self, x: float, y: float) -> None:
        if self._drag is None:
            return
        kind, anchor, _ = self._drag
        self._drag = (kind, anchor, canvas_point(x, y))
        self.draw(self.editor.plan, pending=self._pending())

    def mouse_up(self, x: float, y: float) -> None:
        if self._drag is None:
            return
        kind, anchor, _ = self._drag
        self._drag = (kind, anchor, canvas_point(x, y))
        (cx, cy), side = self._pending()
        self._drag = None
        keys = ("start_x", "start_y", "size") if self.tool.value == "start box" else ("end_x", "end_y", "end_size")
        self._write(**dict(zip(keys, (round(cx, 2), round(cy, 2), round(side, 2)))))

    def _pending(self) -> tuple[tuple[float, float], float]:
        """The box the current drag would write."""
        kind, anchor, point = self._drag
        if kind == "draw":
            return dragged_box(anchor, point)
        (cx, cy), side = self._box(self.tool.value)
        h = side / 2
        cx = min(max(cx + point[0] - anchor[0], h), 1 - h) if side < 1 else 0.5  # moved, kept inside the frame
        cy = min(max(cy + point[1] - anchor[1], h), 1 - h) if side < 1 else 0.5
        return (cx, cy), side

    def _write(self, **values) -> None:
        with self.editor.preview.batch():
            for k, v in values.items():
                self.editor.controls[k].value = v

    # -- drawing -------------------------------------------------------------------------------------------------
    def draw(self, plan: dict | None, pending: tuple[tuple[float, float], float] | None = None) -> None:
        """The first frame (the last generated clip's, else the world's background) enlarged, every frame's
        requested box (thin), the path of their centres, the start (white) and end (ID colour) boxes and the
        waypoints; ``pending`` is the box of a drag in progress (dashed)."""
        import numpy as np
        from ipycanvas import hold_canvas

        from ..worlds.render import PLAIN_BACKGROUND

        scale = CANVAS_PX // 32
        frame = self.frame if self.frame is not None else torch.full((3, 32, 32), PLAIN_BACKGROUND)
        img = (frame.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        img = np.repeat(np.repeat(img, CANVAS_PX // img.shape[0], axis=0), CANVAS_PX // img.shape[1], axis=1)
        px = lambda b: [float(v) * CANVAS_PX for v in b]  # noqa: E731
        with hold_canvas():
            self.canvas.clear()
            self.canvas.put_image_data(img, 0, 0)
            if plan is not None:
                self.canvas.line_width = 1
                self.canvas.stroke_style = "rgba(255,255,255,0.45)"
                for b in plan["hard"]:
                    x0, y0, x1, y1 = px(b)
                    self.canvas.stroke_rect(x0, y0, x1 - x0, y1 - y0)
                centres = [((b[0] + b[2]) / 2 * CANVAS_PX, (b[1] + b[3]) / 2 * CANVAS_PX) for b in plan["hard"]]
                self.canvas.stroke_style = "white"
                self.canvas.begin_path()
                self.canvas.move_to(float(centres[0][0]), float(centres[0][1]))
                for cx, cy in centres[1:]:
                    self.canvas.line_to(float(cx), float(cy))
                self.canvas.stroke()
                self.canvas.line_width = 3
                for b, colour in ((plan["hard"][0], "white"), (plan["hard"][-1], _css(ID_COLOURS[plan["object"]]))):
                    x0, y0, x1, y1 = px(b)
                    self.canvas.stroke_style = colour
                    self.canvas.stroke_rect(x0, y0, x1 - x0, y1 - y0)
                self.canvas.fill_style = "yellow"
                for wx, wy in plan["waypoints"]:
                    self.canvas.fill_circle(wx * CANVAS_PX, wy * CANVAS_PX, 2 * scale)
            if pending is not None:
                (cx, cy), side = pending
                self.canvas.line_width = 2
                self.canvas.stroke_style = "yellow"
                self.canvas.set_line_dash([6, 4])
                self.canvas.stroke_rect(
                    (cx - side / 2) * CANVAS_PX, (cy - side / 2) * CANVAS_PX, side * CANVAS_PX, side * CANVAS_PX
                )
                self.canvas.set_line_dash([])


def _css(rgb: torch.Tensor) -> str:
    r, g, b = (int(255 * float(v)) for v in rgb)
    return f"rgb({r},{g},{b})"


class BoxTrajectoryEditor:
    """The box-trajectory editor: draw the start and end boxes and click waypoints on the enlarged first frame (or
    use the sliders and the waypoint field) → a live preview of the request on every frame; the **Generate**
    button samples a video and shows the requested (white) and detected (yellow) boxes. Its defaults are
    :data:`DEFAULT_REQUEST`."""

    def __init__(self, model, seed: int = 0):
        import ipywidgets as W

        from ..widgets import FunctionView

        d = DEFAULT_REQUEST
        slider = lambda v, desc: W.FloatSlider(  # noqa: E731
            value=round(v, 2), min=0.0, max=1.0, step=0.01, description=desc, continuous_update=False
        )
        size = lambda v, desc: W.FloatSlider(  # noqa: E731
            value=v, min=0.05, max=0.6, step=0.01, description=desc, continuous_update=False
        )
        from .evaluate import table_soft_margin

        self.model = model
        self.frames = clip_frames(model)
        self.controls = {
            "caption": W.Dropdown(options=EDITOR_CAPTIONS, value=d["caption"], description="caption"),
            "obj": W.Dropdown(
                options=[(n, i) for i, n in enumerate(caption_objects(d["caption"]))],
                value=d["obj"],
                description="object",
            ),
            "start_x": slider(d["start"][0], "start x"),
            "start_y": slider(d["start"][1], "start y"),
            "size": size(d["size"], "start size"),
            "end_x": slider(d["end"][0], "end x"),
            "end_y": slider(d["end"][1], "end y"),
            "end_size": size(d["size"], "end size"),
            "waypoints": W.Text(value="", description="waypoints", placeholder="x,y; x,y (or click on the frame)"),
            "mode": W.ToggleButtons(options=["key frames", "motion path"], value="key frames", description="mode"),
            "between": W.ToggleButtons(
                options=[("soft boxes", "soft"), ("no boxes", "none"), ("hard boxes", "hard")],
                value="soft",
                description="in between",
            ),
            "margin": W.FloatSlider(  # the stored tables' relaxation (chosen on validation clips)
                value=round(table_soft_margin(), 3),
                min=0.0,
                max=0.25,
                step=0.001,
                readout_format=".3f",
                description="soft margin",
                continuous_update=False,
            ),
        }
        from .evaluate import table_box_guidance_scale

        self.gen_controls = {
            "box_guidance_scale": W.FloatSlider(  # the stored tables' scale (chosen on validation clips)
                value=table_box_guidance_scale(),
                min=0.0,
                max=9.0,
                step=0.5,
                description="box CFG",
                continuous_update=False,
            ),
            "seed": W.IntSlider(value=seed, min=0, max=20, description="seed", continuous_update=False),
        }
        self.controls["caption"].observe(self._caption_changed, names="value")
        self.canvas = BoxCanvas(self)
        self.request_line = W.HTML()
        self.preview = FunctionView(self.controls, self._plan, self._render_plan, title="Box-trajectory editor")
        self.generator = FunctionView(
            self.gen_controls,
            lambda **v: generate_request(model, self.preview.result, **v),
            self._render_generation,
            button="Generate",
        )
        self.widget = W.VBox(
            [W.HBox([self.canvas.widget, self.preview.widget]), self.request_line, self.generator.widget]
        )

    def _caption_changed(self, change) -> None:
        objects = caption_objects(change["new"])
        with self.preview.batch():
            self.controls["obj"].options = [(n, i) for i, n in enumerate(objects)]
            self.controls["obj"].value = 0

    def _plan(
        self, caption, obj, start_x, start_y, size, end_x, end_y, end_size, waypoints, mode, between, margin
    ) -> dict:
        return plan_request(
            caption,
            obj,
            (start_x, start_y),
            (end_x, end_y),
            size,
            waypoints,
            mode,
            between,
            margin,
            frames=self.frames,
            end_size=end_size,
        )

    def _render_plan(self, plan: dict) -> None:
        self.request_line.value = html_escape(describe_request(plan))
        self.canvas.draw(plan)
        render_plan(plan)

    def _render_generation(self, result: dict) -> None:
        self.canvas.frame = result["video"][0]
        self.canvas.draw(self.plan)
        render_generation(result)

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


def clip_frames(model) -> int:
    from .pipeline import clip_shape

    return clip_shape(model)[0]


def html_escape(line: str) -> str:
    import html

    return f"<code>{html.escape(line)}</code>"


def box_trajectory_editor(model, seed: int = 0) -> BoxTrajectoryEditor:
    """The main widget of chapter 04."""
    return BoxTrajectoryEditor(model, seed)


__all__ = [
    "DEFAULT_REQUEST",
    "BoxConditions",
    "EDITOR_CAPTIONS",
    "box_trajectory_editor",
    "describe_request",
    "generate_request",
    "plan_request",
]
