"""The Events world (chapter 08 COSA): short videos in which the scene changes, one event per frame, with a
paragraph caption of those events in order.

A clip starts from a Shapes scene of 1–2 objects (drawn by the Shapes renderer, so a frame looks exactly like a
Shapes image) and each later frame applies one event to the frame before it: an object **appears**, **turns** another
colour, **moves** a quarter of the frame in one direction, or **leaves**. The paragraph is the first frame's caption
followed by the events joined with "then"::

    a red circle then a blue square appears then the red circle turns green then the blue square leaves

Colours stay distinct within a scene (as in Shapes), so "the red circle" names one object and the paragraph can be
parsed back exactly (:func:`bytecourse.text.parse_event_paragraph`); objects never overlap. Order matters by
construction: the same frames in another order tell a different story (and usually an impossible one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .. import text
from ..validation import check_int
from .render import NUM_COLOURS, NUM_SHAPES, background
from .shapes import render_layout

MOVE_FRACTION = 0.3  # a move shifts the object by this fraction of the frame side
_UNIT = ((-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))  # text.DIRECTION_NAMES order; image y grows down


@dataclass(frozen=True)
class EventsConfig:
    frames: int = 6
    size: int = 32
    max_objects: int = 3
    radius_range: tuple[float, float] = (0.125, 0.2)  # fraction of the frame side
    textured: bool = False

    def validate(self) -> None:
        check_int("frames", self.frames, 2, 16)
        check_int("size", self.size, 16, 256)
        check_int("max_objects", self.max_objects, 2, NUM_COLOURS)
        lo, hi = self.radius_range
        if not 0 < lo <= hi < 0.25:
            raise ValueError(f"radius_range must satisfy 0 < lo <= hi < 0.25, got {self.radius_range}")

    @property
    def paragraph_words(self) -> int:
        """The longest paragraph this world writes: a 2-object first caption (7 words) + 6 words per event."""
        return 7 + 6 * (self.frames - 1)


@dataclass
class EventsBatch:
    """videos (B,T,3,H,W) in [0,1]; paragraphs (B) strings; frame_captions (B) lists of T Shapes captions (the
    scene at each frame); events (B) lists of T−1 ``(kind, colour, shape, arg)`` as in
    :func:`bytecourse.text.parse_event_paragraph`; present/colours/shapes (B,T,K) per-frame object slots."""

    videos: torch.Tensor
    paragraphs: list[str]
    frame_captions: list[list[str]]
    events: list[list[tuple[str, int, int, int | None]]]
    present: torch.Tensor
    colours: torch.Tensor
    shapes: torch.Tensor

    def to(self, device) -> EventsBatch:
        return replace(self, videos=self.videos.to(device))

    def __len__(self) -> int:
        return self.videos.shape[0]


def _free_spot(
    radius: float, others: list[tuple[float, float, float]], size: int, g: torch.Generator, near=None
) -> tuple[float, float] | None:
    """A centre for an object of ``radius`` whose box (plus a 1-pixel gap) touches no other object's; ``near``:
    the one candidate to test (a move's destination) instead of 64 random ones."""
    cands = (
        [near]
        if near is not None
        else [tuple(c) for c in (torch.rand(64, 2, generator=g) * (size - 2 * radius) + radius).tolist()]
    )
    for cx, cy in cands:
        if not (radius <= cx <= size - radius and radius <= cy <= size - radius):
            continue
        if all(max(abs(cx - ox), abs(cy - oy)) > radius + r + 1.0 for ox, oy, r in others):
            return cx, cy
    return None


def _simulate(config: EventsConfig, g: torch.Generator):
    """One clip's scenes and events: a list of T scenes (slot → (colour, shape, radius, cx, cy)) and T−1 events."""
    size, k = config.size, config.max_objects
    lo, hi = (r * size for r in config.radius_range)

    def new_object(scene: dict) -> tuple | None:
        used = {o[0] for o in scene.values()}
        free_colours = [c for c in range(NUM_COLOURS) if c not in used]
        colour = free_colours[int(torch.randint(len(free_colours), (1,), generator=g))]
        shape = int(torch.randint(NUM_SHAPES, (1,), generator=g))
        radius = lo + (hi - lo) * float(torch.rand(1, generator=g))
        spot = _free_spot(radius, [(o[3], o[4], o[2]) for o in scene.values()], size, g)
        return None if spot is None else (colour, shape, radius, *spot)

    scene: dict[int, tuple] = {}
    for _ in range(1 + int(torch.randint(2, (1,), generator=g))):
        obj = new_object(scene)
        if obj is not None:
            scene[len(scene)] = obj
    scenes, events = [dict(scene)], []
    for _ in range(config.frames - 1):
        options = ["turns", "moves"] + (["appears"] if len(scene) < k else []) + (["leaves"] if len(scene) > 1 else [])
        for _attempt in range(8):
            kind = options[int(torch.randint(len(options), (1,), generator=g))]
            slots = sorted(scene)
            slot = slots[int(torch.randint(len(slots), (1,), generator=g))]
            colour, shape, radius, cx, cy = scene[slot]
            if kind == "appears":
                obj = new_object(scene)
                if obj is None:
                    continue
                slot = min(set(range(k)) - set(scene))
                scene[slot] = obj
                events.append(("appears", obj[0], obj[1], None))
            elif kind == "turns":
                used = {o[0] for o in scene.values()}
                free = [c for c in range(NUM_COLOURS) if c not in used]
                new = free[int(torch.randint(len(free), (1,), generator=g))]
                scene[slot] = (new, shape, radius, cx, cy)
                events.append(("turns", colour, shape, new))
            elif kind == "moves":
                d = int(torch.randint(4, (1,), generator=g))
                step = MOVE_FRACTION * size
                target = (cx + _UNIT[d][0] * step, cy + _UNIT[d][1] * step)
                others = [(o[3], o[4], o[2]) for s, o in scene.items() if s != slot]
                if _free_spot(radius, others, size, g, near=target) is None:
                    continue
                scene[slot] = (colour, shape, radius, *target)
                events.append(("moves", colour, shape, d))
            else:
                del scene[slot]
                events.append(("leaves", colour, shape, None))
            break
        else:  # nothing else fitted: a colour change always does
            slot = sorted(scene)[0]
            colour, shape, radius, cx, cy = scene[slot]
            new = min(set(range(NUM_COLOURS)) - {o[0] for o in scene.values()})
            scene[slot] = (new, shape, radius, cx, cy)
            events.append(("turns", colour, shape, new))
        scenes.append(dict(scene))
    return scenes, events


def make_events(batch: int, seed: int = 0, config: EventsConfig | None = None) -> EventsBatch:
    """A seeded batch of Events clips; the same ``seed`` gives the same clips on every machine."""
    config = config or EventsConfig()
    if not isinstance(config, EventsConfig):
        raise ValueError(f"config must be an EventsConfig, got {type(config).__name__}")
    config.validate()
    batch = check_int("batch", batch, 1)
    g = torch.Generator().manual_seed(check_int("seed", seed, 0, 2**63 - 1))
    t, k = config.frames, config.max_objects
    present = torch.zeros(batch, t, k, dtype=torch.bool)
    colours = torch.zeros(batch, t, k, dtype=torch.long)
    shapes = torch.zeros(batch, t, k, dtype=torch.long)
    radii = torch.ones(batch, t, k)
    centers = torch.zeros(batch, t, k, 2)
    paragraphs, frame_captions, all_events = [], [], []
    for b in range(batch):
        scenes, events = _simulate(config, g)
        for f, scene in enumerate(scenes):
            for slot, (c, s, r, cx, cy) in scene.items():
                present[b, f, slot] = True
                colours[b, f, slot], shapes[b, f, slot], radii[b, f, slot] = c, s, r
                centers[b, f, slot] = torch.tensor([cx, cy])
        captions = [text.shapes_caption(*zip(*[(o[0], o[1]) for _, o in sorted(sc.items())])) for sc in scenes]
        paragraphs.append(" then ".join([captions[0], *(text.event_phrase(*e) for e in events)]))
        frame_captions.append(captions)
        all_events.append(events)
    bg = background(batch, config.size, config.size, config.textured, g)
    bg = bg[:, None].expand(batch, t, *bg.shape[1:]).reshape(batch * t, *bg.shape[1:])
    layout = dict(
        present=present.flatten(0, 1),
        colours=colours.flatten(0, 1),
        shapes=shapes.flatten(0, 1),
        radii=radii.flatten(0, 1),
        depths=0.3 + 0.01 * torch.arange(k).expand(batch * t, k).float(),
        centers=centers.flatten(0, 1),
    )
    image, *_ = render_layout(layout, bg)
    return EventsBatch(
        videos=image.view(batch, t, 3, config.size, config.size),
        paragraphs=paragraphs,
        frame_captions=frame_captions,
        events=all_events,
        present=present,
        colours=colours,
        shapes=shapes,
    )
