"""The Shapes world: 1–3 flat-coloured shapes on a plain or textured background, with exact labels.

:meth:`ShapesConfig.perception` is its harder setting for perception (chapter 03): a coloured textured
background, jittered object colours, pixel noise, overlapping objects that occlude in depth order, and a visible
depth cue (apparent size ∝ 1/depth, nearer objects lower in the frame).

Two further options make multi-target segmentation mean something (chapter 10 PixelLM): ``repeat_colours`` (colours
drawn independently, so "every red thing" can have several targets) and ``touching`` (the first two objects are
placed side by side, overlapping by :data:`TOUCH_OVERLAP` of the smaller radius, so their visible masks share a
boundary and the nearer occludes the other: the pairs a target-refinement loss has to separate).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .. import text
from ..validation import check_flag, check_float, check_int
from .render import (
    NUM_COLOURS,
    NUM_SHAPES,
    PALETTE,
    background,
    background_depth,
    composite,
    masks_to_boxes,
    shape_masks,
)

DEPTH_CUE_RANGE = (0.2, 0.7)  # object depths with the depth cue: the nearest has radius_range's largest radius
MIN_VISIBLE_PIXELS = 4  # with overlap, an object showing fewer pixels is dropped
TOUCH_OVERLAP = 0.35  # with touching, the pair's boxes overlap by this fraction of the smaller radius


@dataclass(frozen=True)
class ShapesConfig:
    """Toy defaults. ``object_probs[k]`` is the probability of k+1 objects (None: uniform)."""

    size: int = 32
    max_objects: int = 3
    object_probs: tuple[float, ...] | None = None
    radius_range: tuple[float, float] = (0.125, 0.22)  # fraction of the image side
    textured: bool = False
    caption_length: int = 12
    # the perception setting (chapter 03); all off by default, and then the world is drawn exactly as before
    chromatic: bool = False  # coloured textured background (render.chromatic_background)
    colour_jitter: float = 0.0  # each object's RGB shifted by up to ± this per channel
    noise: float = 0.0  # Gaussian pixel noise (std) on the final image, clamped to [0, 1]
    overlap: bool = False  # objects may overlap; the nearer one occludes (a fully hidden one is dropped)
    depth_cue: bool = False  # apparent size ∝ 1/depth, and nearer objects stand lower (the ground ramp)
    depth_range: tuple[float, float] = DEPTH_CUE_RANGE  # object depths with the depth cue
    # multi-target segmentation (chapter 10); off by default
    repeat_colours: bool = False  # colours drawn independently (with replacement), not all different
    touching: bool = False  # objects 0 and 1 side by side, their visible masks sharing a boundary

    @classmethod
    def perception(cls, **overrides) -> ShapesConfig:
        """The perception setting of chapter 03 Meta Prompts: every option above on."""
        return cls(
            **{"chromatic": True, "colour_jitter": 0.3, "noise": 0.12, "overlap": True, "depth_cue": True} | overrides
        )

    def validate(self) -> None:
        check_int("size", self.size, 8, 512)
        check_flag("repeat_colours", self.repeat_colours)
        check_int("max_objects", self.max_objects, 1, 8 if self.repeat_colours else NUM_COLOURS)
        check_int("caption_length", self.caption_length, 1)
        check_flag("textured", self.textured)
        for name in ("chromatic", "overlap", "depth_cue", "touching"):
            check_flag(name, getattr(self, name))
        check_float("colour_jitter", self.colour_jitter, 0.0, 0.5)
        check_float("noise", self.noise, 0.0, 0.5)
        if self.object_probs is not None:
            for i, p in enumerate(self.object_probs):
                check_float(f"object_probs[{i}]", p, 0.0)
            if len(self.object_probs) != self.max_objects or sum(self.object_probs) <= 0:
                raise ValueError(
                    f"object_probs must be {self.max_objects} non-negative weights, got {self.object_probs}"
                )
        if len(self.depth_range) != 2 or not 0 < self.depth_range[0] < self.depth_range[1] < 1:
            raise ValueError(f"depth_range must be (near, far) with 0 < near < far < 1, got {self.depth_range}")
        if len(self.radius_range) != 2:
            raise ValueError(f"radius_range must be (lo, hi), got {self.radius_range}")
        lo, hi = (check_float(f"radius_range[{i}]", r) for i, r in enumerate(self.radius_range))
        if not 0 < lo <= hi < 0.5:
            raise ValueError(f"radius_range must satisfy 0 < lo <= hi < 0.5, got {self.radius_range}")
        if self.caption_length < 4 * self.max_objects - 1:
            raise ValueError(f"caption_length={self.caption_length} is too short for {self.max_objects} objects")
        if self.touching and self.overlap:
            raise ValueError("touching places a pair among non-overlapping objects: it needs overlap=False")


@dataclass
class ShapesBatch:
    """One batch with exact ground truth. ``K = max_objects``; slot k is used where ``present[:, k]``.

    images (B,3,H,W) in [0,1]; tokens (B,L); class_mask (B,H,W) with 0 = background and 1 + shape kind;
    instance_masks (B,K,H,W) visible pixels; boxes (B,K,4) normalised (x0,y0,x1,y1); depth (B,H,W) in
    (0,1], smaller = nearer; colours/shapes (B,K) indices into text.COLOUR_NAMES / SHAPE_NAMES;
    centers (B,K,2) (x, y) and radii (B,K) in pixels; touching (B,) whether objects 0 and 1 were placed as a
    pair and their visible masks touch (8-neighbourhood; only with ``ShapesConfig.touching``; else None).
    """

    images: torch.Tensor
    captions: list[str]
    tokens: torch.Tensor
    class_mask: torch.Tensor
    instance_masks: torch.Tensor
    boxes: torch.Tensor
    depth: torch.Tensor
    present: torch.Tensor
    colours: torch.Tensor
    shapes: torch.Tensor
    centers: torch.Tensor
    radii: torch.Tensor
    depths: torch.Tensor = field(repr=False)
    touching: torch.Tensor | None = field(default=None, repr=False)

    def to(self, device) -> ShapesBatch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return replace(self, **moved)

    def __len__(self) -> int:
        return self.images.shape[0]


def sample_layout(
    batch: int, config: ShapesConfig, generator: torch.Generator, num_objects: int | None = None
) -> dict[str, torch.Tensor]:
    """Object counts, distinct colours, shape kinds, radii, depths and non-overlapping centres.

    Centres are chosen among 64 candidates per object: the first whose box (plus a 1-pixel gap) does not
    touch an already placed object — fully vectorised over the batch. If none fits, the object is shrunk
    to the smallest size and tried again; if it still does not fit (rare), it is dropped. So objects never
    occlude each other and every caption names exactly the visible objects.

    With ``config.overlap`` the centres are drawn anywhere inside the frame and the nearer object occludes;
    with ``config.depth_cue`` depths come from :data:`DEPTH_CUE_RANGE`, radii are ∝ 1/depth and a candidate's
    height in the frame follows its nearness (lower = nearer, as on the background's ground ramp).
    """
    k, size = config.max_objects, config.size
    if num_objects is None:
        probs = torch.tensor(config.object_probs or [1.0] * k, dtype=torch.float)
        counts = torch.multinomial(probs, batch, replacement=True, generator=generator) + 1
    else:
        check_int("num_objects", num_objects, 1, k)
        counts = torch.full((batch,), num_objects)
    present = torch.arange(k)[None] < counts[:, None]
    if config.repeat_colours:
        colours = torch.randint(0, NUM_COLOURS, (batch, k), generator=generator)
    else:
        colours = torch.argsort(torch.rand(batch, NUM_COLOURS, generator=generator), dim=1)[:, :k]
    kinds = torch.randint(0, NUM_SHAPES, (batch, k), generator=generator)
    lo, hi = config.radius_range
    radii = (lo + (hi - lo) * torch.rand(batch, k, generator=generator)) * size
    depths = 0.15 + 0.35 * torch.rand(batch, k, generator=generator)
    n_cand = 64
    u = torch.rand(batch, k, n_cand, 2, generator=generator)
    if config.depth_cue:  # a pinhole camera over the ground: r ∝ 1/depth, and the nearer, the lower it stands
        near, far = config.depth_range
        depths = near + (far - near) * torch.rand(batch, k, generator=generator)
        radii = hi * size * near / depths
        nearness = (far - depths) / (far - near)  # 1 nearest
        u[..., 1] = (nearness[..., None] + 0.35 * (u[..., 1] - 0.5)).clamp(0, 1)
    if config.overlap:  # anywhere inside the frame; composite() lets the nearer object occlude
        r = radii[..., None]
        centers = r + u[:, :, 0] * (size - 2 * r)
        return dict(present=present, colours=colours, shapes=kinds, radii=radii, depths=depths, centers=centers)
    centers = torch.zeros(batch, k, 2)
    rows = torch.arange(batch)
    touching = torch.zeros(batch, dtype=torch.bool)
    for j in range(k):
        if j == 1 and config.touching:
            r0, r1 = radii[:, 0], radii[:, 1]
            reach = r0 + r1 - TOUCH_OVERLAP * torch.minimum(r0, r1)
            right = centers[:, 0, 0] + reach
            left = centers[:, 0, 0] - reach
            x = torch.where(right + r1 <= size, right, left)
            touching = present[:, 1] & (x - r1 >= 0) & (x + r1 <= size)
            y = centers[:, 0, 1].clamp(r1, size - r1)
            pair = torch.stack([x, y], -1)
        for attempt in range(2):  # second attempt: shrink the objects that did not fit to the smallest size
            r = radii[:, j, None, None]
            cand = r + u[:, j] * (size - 2 * r)  # (B, n_cand, 2), shape fully inside
            overlap = torch.zeros(batch, n_cand)
            for i in range(j):
                gap = radii[:, j, None] + radii[:, i, None] + 1.0
                d = (cand - centers[:, i, None]).abs()
                ov = (gap - d[..., 0]).clamp(min=0) * (gap - d[..., 1]).clamp(min=0)
                overlap = overlap + ov * present[:, i, None]
            if j == 1 and config.touching:  # the pair's place where it fits; the usual candidates elsewhere
                cand[:, 0] = torch.where(touching[:, None], pair, cand[:, 0])
                overlap[:, 0] = torch.where(touching, 0.0, overlap[:, 0])
            best = overlap.argmin(dim=1)  # the first minimum → the first non-overlapping candidate
            fits = overlap[rows, best] == 0
            if attempt == 0:
                centers[:, j] = cand[rows, best]
                radii[:, j] = torch.where(fits, radii[:, j], lo * size)
            else:
                centers[:, j] = torch.where(fits[:, None], cand[rows, best], centers[:, j])
                present[:, j] &= fits
    out = dict(present=present, colours=colours, shapes=kinds, radii=radii, depths=depths, centers=centers)
    return out | ({"touching": touching} if config.touching else {})


def render_layout(layout: dict[str, torch.Tensor], bg: torch.Tensor, rgb: torch.Tensor | None = None):
    """Image, visible masks, depth and class mask for a layout over backgrounds ``bg (B,3,H,W)``
    (used by Shapes and, for every frame at once, by Motion); ``rgb (B,K,3)``: jittered object colours."""
    size = bg.shape[-1]
    present = layout["present"]
    masks = shape_masks(layout["centers"], layout["radii"], layout["shapes"], size, size) & present[..., None, None]
    image, visible, depth, owner = composite(
        bg, masks, layout["colours"], layout["depths"], background_depth(size, size), rgb
    )
    shape_at = torch.gather(layout["shapes"], 1, owner.clamp(min=0).flatten(1)).view_as(owner)
    class_mask = torch.where(owner >= 0, shape_at + 1, 0)
    return image, visible, depth, class_mask


def colour_shape_classes(batch: ShapesBatch) -> torch.Tensor:
    """The harder label set: ``(B, H, W)`` with 0 = background and 1 + colour·NUM_SHAPES + shape kind."""
    owner = torch.where(batch.instance_masks.any(1), batch.instance_masks.float().argmax(1), -1)
    label = 1 + batch.colours * NUM_SHAPES + batch.shapes  # (B, K)
    return torch.where(owner >= 0, torch.gather(label, 1, owner.clamp(min=0).flatten(1)).view_as(owner), 0)


def make_shapes(
    batch: int, seed: int = 0, config: ShapesConfig | None = None, *, num_objects: int | None = None
) -> ShapesBatch:
    """A seeded batch of the Shapes world. The same ``seed`` gives the same batch on every machine
    (all randomness is drawn on the CPU from one ``torch.Generator``)."""
    config = config or ShapesConfig()
    if not isinstance(config, ShapesConfig):
        raise ValueError(f"config must be a ShapesConfig, got {type(config).__name__}")
    config.validate()
    batch = check_int("batch", batch, 1)
    seed = check_int("seed", seed, 0, 2**63 - 1)
    if num_objects is not None:
        num_objects = check_int("num_objects", num_objects, 1, config.max_objects)
    g = torch.Generator().manual_seed(seed)
    layout = sample_layout(batch, config, g, num_objects)
    bg = background(batch, config.size, config.size, config.textured, g, chromatic=config.chromatic)
    rgb = None
    if config.colour_jitter > 0:
        shift = (torch.rand(batch, config.max_objects, 3, generator=g) * 2 - 1) * config.colour_jitter
        rgb = (PALETTE[layout["colours"]] + shift).clamp(0, 1)
    image, visible, depth, class_mask = render_layout(layout, bg, rgb)
    if config.overlap:  # an object hidden but for a few pixels leaves the scene (and the caption)
        hidden = layout["present"] & (visible.flatten(2).sum(-1) < MIN_VISIBLE_PIXELS)
        if bool(hidden.any()):
            layout["present"] = layout["present"] & ~hidden
            image, visible, depth, class_mask = render_layout(layout, bg, rgb)
    if config.noise > 0:
        image = (image + config.noise * torch.randn(image.shape, generator=g)).clamp(0, 1)
    boxes, _ = masks_to_boxes(visible)
    if config.touching:  # a pair counts as touching where its visible masks are 8-neighbours
        grown = torch.nn.functional.max_pool2d(visible[:, 0, None].float(), 3, 1, 1)[:, 0] > 0
        layout["touching"] = layout["touching"] & (grown & visible[:, 1]).flatten(1).any(1)
    captions = []
    for b in range(batch):
        keep = layout["present"][b]
        captions.append(text.shapes_caption(layout["colours"][b, keep].tolist(), layout["shapes"][b, keep].tolist()))
    return ShapesBatch(
        images=image,
        captions=captions,
        tokens=text.encode(captions, config.caption_length),
        class_mask=class_mask,
        instance_masks=visible,
        boxes=boxes,
        depth=depth,
        present=layout["present"],
        colours=layout["colours"],
        shapes=layout["shapes"],
        centers=layout["centers"],
        radii=layout["radii"],
        depths=layout["depths"],
        touching=layout.get("touching"),
    )
