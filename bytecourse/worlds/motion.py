"""The Motion world: T-frame videos of Shapes objects moving linearly, along curves, bouncing off the walls,
entering or leaving the frame — with per-frame boxes for every object and a caption with motion words."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .. import text
from ..validation import check_int
from .render import background, masks_to_boxes
from .shapes import ShapesConfig, render_layout, sample_layout

MOTION_KINDS: tuple[str, ...] = ("linear", "curved", "bouncing", "entering", "leaving")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
_SIDES = ("left", "right", "top", "bottom")  # caption words for the frame side an object enters from / leaves to
_UNIT = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])  # image y grows downwards


@dataclass(frozen=True)
class MotionConfig:
    frames: int = 8
    size: int = 32
    max_objects: int = 3
    object_probs: tuple[float, ...] | None = None
    radius_range: tuple[float, float] = (0.125, 0.2)
    textured: bool = False
    kinds: tuple[str, ...] = MOTION_KINDS
    caption_length: int = 24

    def validate(self) -> None:
        check_int("frames", self.frames, 2, 64)
        check_int("max_objects", self.max_objects, 1)
        check_int("caption_length", self.caption_length, 1)
        bad = [k for k in self.kinds if k not in MOTION_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {MOTION_KINDS}, got {self.kinds}")
        if self.caption_length < 8 * self.max_objects - 1:
            raise ValueError(f"caption_length={self.caption_length} is too short for {self.max_objects} objects")
        self.shapes_config().validate()

    def shapes_config(self) -> ShapesConfig:
        return ShapesConfig(
            size=self.size,
            max_objects=self.max_objects,
            object_probs=self.object_probs,
            radius_range=self.radius_range,
            textured=self.textured,
            caption_length=4 * self.max_objects,
        )


@dataclass
class MotionBatch:
    """videos (B,T,3,H,W) in [0,1]; boxes (B,T,K,4) tight normalised boxes of the visible pixels (zeros when
    not visible); boxes_full (B,T,K,4) geometric boxes, which extend past the frame for objects partly or
    wholly outside; visible (B,T,K); trajectories (B,K,T,2) centres in pixels; motion (B,K) index into
    MOTION_KINDS; direction (B,K) index into DIRECTIONS (for entering: the side it enters from; leaving:
    the side it leaves to); plus per-frame instance masks, class masks and depth."""

    videos: torch.Tensor
    captions: list[str]
    tokens: torch.Tensor
    boxes: torch.Tensor
    boxes_full: torch.Tensor
    visible: torch.Tensor
    present: torch.Tensor
    colours: torch.Tensor
    shapes: torch.Tensor
    radii: torch.Tensor
    trajectories: torch.Tensor
    motion: torch.Tensor
    direction: torch.Tensor
    instance_masks: torch.Tensor
    class_mask: torch.Tensor
    depth: torch.Tensor

    def to(self, device) -> MotionBatch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return replace(self, **moved)

    def __len__(self) -> int:
        return self.videos.shape[0]


def _motion_phrase(kind: int, direction: int) -> str:
    name = MOTION_KINDS[kind]
    if name == "linear":
        return f"moves {DIRECTIONS[direction]}"
    if name == "curved":
        return f"curves {DIRECTIONS[direction]}"
    if name == "bouncing":
        return "bounces"
    if name == "entering":
        return f"enters from the {_SIDES[direction]}"
    return f"leaves to the {_SIDES[direction]}"


def trajectories(
    centers: torch.Tensor,
    radii: torch.Tensor,
    kinds: torch.Tensor,
    dirs: torch.Tensor,
    frames: int,
    size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Centres ``(B, K, T, 2)`` for each motion kind (the paths are exact closed forms).

    linear: p0 + v·t; curved: the same plus a perpendicular arc a·sin(π t/(T−1)); bouncing: a fast straight
    path folded back into the frame (reflection off the walls); entering: from just outside side ``dir`` to
    inside; leaving: from inside to just outside side ``dir``.
    """
    batch, k = radii.shape
    t = torch.arange(frames, dtype=torch.float32) / (frames - 1)  # 0..1
    unit = _UNIT[dirs]  # (B,K,2)
    perp = unit.flip(-1)
    u = torch.rand(batch, k, 4, generator=generator)
    r = radii[..., None]
    lo, hi = r, size - r  # valid centre range, per axis
    span = (hi - lo).squeeze(-1)
    # linear / curved: travel 40–75% of the free span along the direction; start so that the end is inside
    travel = span * (0.4 + 0.35 * u[..., 0])
    axis_pos = (dirs >= 2).long()  # 0: x-axis, 1: y-axis
    sign = unit.sum(-1)  # ±1
    along_start = torch.where(
        sign > 0, lo.squeeze(-1) + u[..., 1] * (span - travel), hi.squeeze(-1) - u[..., 1] * (span - travel)
    )
    start = centers.clone()
    start.scatter_(-1, axis_pos[..., None], along_start[..., None])
    lin = start[..., None, :] + (sign * travel)[..., None, None] * unit.abs()[..., None, :] * t[:, None]
    amp = (0.15 + 0.15 * u[..., 2]) * span * torch.where(u[..., 3] > 0.5, 1.0, -1.0)
    arc = amp[..., None, None] * perp.abs()[..., None, :] * torch.sin(torch.pi * t)[:, None]
    curved = lin + arc
    curved = torch.maximum(torch.minimum(curved, hi[..., None, :]), lo[..., None, :])
    # bouncing: velocity with |v| ≈ 1.2–1.8 spans over the clip in a random diagonal direction, folded
    ang = 2 * torch.pi * u[..., 0]
    vel = torch.stack([torch.cos(ang), torch.sin(ang)], -1) * (span * (1.2 + 0.6 * u[..., 1]))[..., None]
    raw = centers[..., None, :] - lo[..., None, :] + vel[..., None, :] * t[:, None]
    period = 2 * span[..., None, None]
    folded = torch.remainder(raw, period)
    bounce = lo[..., None, :] + torch.where(folded > span[..., None, None], period - folded, folded)
    # entering / leaving: the outside point sits one radius + 1 pixel past side `dir`
    outside = centers.clone()
    edge = torch.where(sign > 0, size + r.squeeze(-1) + 1, -r.squeeze(-1) - 1)
    outside.scatter_(-1, axis_pos[..., None], edge[..., None])
    inside = centers
    enter = outside[..., None, :] + (inside - outside)[..., None, :] * t[:, None]
    leave = inside[..., None, :] + (outside - inside)[..., None, :] * t[:, None]
    out = torch.stack([lin, curved, bounce, enter, leave], dim=0)  # (5,B,K,T,2)
    return torch.gather(out, 0, kinds[None, ..., None, None].expand(1, batch, k, frames, 2))[0]


def make_motion(
    batch: int, seed: int = 0, config: MotionConfig | None = None, *, num_objects: int | None = None
) -> MotionBatch:
    """A seeded batch of the Motion world (same seed → same batch on every machine)."""
    config = config or MotionConfig()
    if not isinstance(config, MotionConfig):
        raise ValueError(f"config must be a MotionConfig, got {type(config).__name__}")
    config.validate()
    batch = check_int("batch", batch, 1)
    seed = check_int("seed", seed, 0, 2**63 - 1)
    if num_objects is not None:
        num_objects = check_int("num_objects", num_objects, 1, config.max_objects)
    g = torch.Generator().manual_seed(seed)
    scfg = config.shapes_config()
    layout = sample_layout(batch, scfg, g, num_objects)
    k, frames, size = config.max_objects, config.frames, config.size
    allowed = torch.tensor([MOTION_KINDS.index(n) for n in config.kinds])
    kinds = allowed[torch.randint(0, len(allowed), (batch, k), generator=g)]
    dirs = torch.randint(0, 4, (batch, k), generator=g)
    traj = trajectories(layout["centers"], layout["radii"], kinds, dirs, frames, size, g)
    # render all frames at once: (B*T) images, the same background texture on every frame of a clip
    rep = lambda x: x.repeat_interleave(frames, dim=0)  # noqa: E731
    frame_layout = {key: rep(v) for key, v in layout.items()}
    frame_layout["centers"] = traj.transpose(1, 2).reshape(batch * frames, k, 2)
    bg_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    gb = torch.Generator().manual_seed(bg_seed)
    bg = background(batch, size, size, config.textured, gb).repeat_interleave(frames, dim=0)  # static camera
    image, visible, depth, class_mask = render_layout(frame_layout, bg)
    boxes, nonempty = masks_to_boxes(visible)
    rad = layout["radii"][:, None, :, None]
    ctr = traj.transpose(1, 2)  # (B,T,K,2)
    boxes_full = torch.cat([ctr - rad, ctr + rad], dim=-1) / size
    captions = []
    for b in range(batch):
        parts = []
        for j in layout["present"][b].nonzero().flatten().tolist():
            c, s = int(layout["colours"][b, j]), int(layout["shapes"][b, j])
            parts.append(
                f"a {text.COLOUR_NAMES[c]} {text.SHAPE_NAMES[s]} {_motion_phrase(int(kinds[b, j]), int(dirs[b, j]))}"
            )
        captions.append(" and ".join(parts))
    sh = (batch, frames)
    return MotionBatch(
        videos=image.view(*sh, 3, size, size),
        captions=captions,
        tokens=text.encode(captions, config.caption_length),
        boxes=boxes.view(*sh, k, 4),
        boxes_full=boxes_full,
        visible=nonempty.view(*sh, k),
        present=layout["present"],
        colours=layout["colours"],
        shapes=layout["shapes"],
        radii=layout["radii"],
        trajectories=traj,
        motion=kinds,
        direction=dirs,
        instance_masks=visible.view(*sh, k, size, size),
        class_mask=class_mask.view(*sh, size, size),
        depth=depth.view(*sh, size, size),
    )
