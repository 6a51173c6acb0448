"""The motion oracle: object tracks from per-frame detections, read back against a Motion caption.

- **Track**: for each object a caption names (the Motion world gives the objects of a clip distinct
  colours), the largest component of its colour on every frame — centroid, box, shape, border contact.
- **Direction accuracy**: linear and curved motion by the sign of the net displacement (first to last
  frame it is seen) along its dominant axis; entering and leaving by the side — the displacement points
  away from (entering) or towards (leaving) the side, and the object is not fully inside on the first
  (entering) or last (leaving) frame; bouncing by kind only (it has no single direction): seen on every
  frame and a path length of at least :data:`BOUNCE_PATH` free spans, beyond what a linear or curved path
  covers in a clip.
- **Identity consistency** (one-object clips with ≥ 2 frames where an object is fully inside): on every such
  frame the largest fully-inside object has the same colour and shape. The oracle's own shape reading of
  small objects is not perfect, so real clips score a little below 1: their row is the ceiling.
- **Background flicker**: mean |x_{t+1} − x_t| over pixels that are background in both frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..text import DIRECTION_NAMES, parse_motion_caption
from ..validation import check_images
from .segment import OracleConfig, classify_pixels, detect_objects

#: path length (in units of the frame's free span, 1 − object width) that only bouncing reaches
BOUNCE_PATH = 1.0
_OPPOSITE = {0: 1, 1: 0, 2: 3, 3: 2}


@dataclass
class Track:
    """One caption object over the T frames (NaN / −1 / False where its colour is not found)."""

    colour: int
    shape: int
    kind: str
    direction: int | None
    centroids: torch.Tensor  # (T, 2) normalised (x, y)
    boxes: torch.Tensor  # (T, 4) normalised
    shapes: torch.Tensor  # (T,) detected shape kind, −1 if absent
    seen: torch.Tensor  # (T,) bool
    touches_border: torch.Tensor  # (T,) bool

    def fully_inside(self) -> torch.Tensor:
        return self.seen & ~self.touches_border


def _check_video(video: torch.Tensor, name: str = "video") -> None:
    check_images(name, video, layout="(T, 3, H, W)")


def track_objects(video: torch.Tensor, caption: str, config: OracleConfig = OracleConfig()) -> list[Track]:
    """Tracks ``(T, 3, H, W)`` → one :class:`Track` per object of the Motion ``caption``."""
    _check_video(video)
    frames = detect_objects(video, config)
    tracks = []
    t = video.shape[0]
    for colour, shape, kind, direction in parse_motion_caption(caption):
        cen = torch.full((t, 2), math.nan)
        box = torch.full((t, 4), math.nan)
        shp = torch.full((t,), -1, dtype=torch.long)
        seen = torch.zeros(t, dtype=torch.bool)
        border = torch.zeros(t, dtype=torch.bool)
        for i, dets in enumerate(frames):
            match = next((o for o in dets if o.colour == colour), None)  # largest first
            if match is not None:
                cen[i], box[i] = torch.tensor(match.centroid), torch.tensor(match.box)
                shp[i], seen[i], border[i] = match.shape, True, match.touches_border
        tracks.append(Track(colour, shape, kind, direction, cen, box, shp, seen, border))
    return tracks


def read_direction(track: Track) -> int | None:
    """The direction of the net displacement (index into DIRECTION_NAMES), None if seen on < 2 frames."""
    idx = track.seen.nonzero().flatten()
    if len(idx) < 2:
        return None
    d = track.centroids[idx[-1]] - track.centroids[idx[0]]
    if abs(float(d[0])) >= abs(float(d[1])):
        return 1 if d[0] > 0 else 0
    return 3 if d[1] > 0 else 2


def path_length(track: Track) -> float:
    """Sum of frame-to-frame centroid steps over consecutive frames where it is seen, in free spans."""
    c, s = track.centroids, track.seen
    both = s[1:] & s[:-1]
    if not bool(both.any()):
        return 0.0
    steps = (c[1:] - c[:-1]).norm(dim=-1)[both]
    width = (track.boxes[s, 2] - track.boxes[s, 0]).mean()
    return float(steps.sum() / (1 - width).clamp(min=0.1))


def motion_correct(track: Track) -> bool:
    """Does the track show the motion its caption phrase asks for (see the module docstring)?"""
    if track.kind == "bouncing":
        return bool(track.seen.all()) and path_length(track) >= BOUNCE_PATH
    moved = read_direction(track)
    if moved is None:
        return False
    if track.kind in ("linear", "curved"):
        return moved == track.direction
    inside = track.fully_inside()
    if track.kind == "entering":
        return moved == _OPPOSITE[track.direction] and not bool(inside[0])
    return moved == track.direction and not bool(inside[-1])  # leaving


def identity_consistent(video: torch.Tensor, config: OracleConfig = OracleConfig()) -> bool | None:
    """One-object clips: does the largest fully-inside object have one colour and shape on every frame where
    there is one? ``None`` (not scored) when fewer than two frames have a fully-inside object — e.g. an object
    that enters late; a clip with no object at all fails the direction check instead."""
    _check_video(video)
    seen = []
    for dets in detect_objects(video, config):
        inside = [o for o in dets if not o.touches_border]
        if inside:
            seen.append((inside[0].colour, inside[0].shape))
    if len(seen) < 2:
        return None
    return len(set(seen)) == 1


def background_flicker(videos: torch.Tensor, config: OracleConfig = OracleConfig()) -> torch.Tensor:
    """Per clip ``(B,)``: mean |x_{t+1} − x_t| over pixels that are background in both frames (0 if none)."""
    check_images("videos", videos, dims=5, layout="(B, T, 3, H, W)")
    b, t = videos.shape[:2]
    _, bg = classify_pixels(videos.flatten(0, 1), config)
    bg = bg.view(b, t, *bg.shape[1:])
    both = (bg[:, 1:] & bg[:, :-1]).float()
    diff = (videos[:, 1:] - videos[:, :-1]).abs().float().mean(2)
    return (diff * both).flatten(1).sum(1) / both.flatten(1).sum(1).clamp(min=1)


def _tracks(videos: torch.Tensor, captions: list[str], config: OracleConfig) -> list[list[Track]]:
    """The checked batch's tracks, one list per clip (one track per caption object)."""
    check_images("videos", videos, dims=5, layout="(B, T, 3, H, W)")
    if isinstance(captions, str) or len(captions) != videos.shape[0] or not captions:
        raise ValueError(f"need one caption per clip: {len(captions)} captions for {videos.shape[0]} clips")
    return [track_objects(video, caption, config) for video, caption in zip(videos, captions)]


def motion_scores(
    videos: torch.Tensor, captions: list[str], config: OracleConfig = OracleConfig()
) -> dict[str, float]:
    """Direction accuracy (over every caption object), identity consistency (over one-object clips) and mean
    background flicker of a batch of clips ``(B, T, 3, H, W)`` against their Motion captions."""
    hits, ident = [], []
    for video, tracks in zip(videos, _tracks(videos, captions, config)):
        hits += [motion_correct(tr) for tr in tracks]
        if len(tracks) == 1 and (same := identity_consistent(video, config)) is not None:
            ident.append(same)
    return {
        "direction": sum(hits) / len(hits),
        "identity": sum(ident) / len(ident) if ident else math.nan,
        "flicker": float(background_flicker(videos, config).mean()),
    }


def direction_by_kind(
    videos: torch.Tensor, captions: list[str], config: OracleConfig = OracleConfig()
) -> dict[str, float]:
    """Direction accuracy split by the caption's motion kind (``linear``, ``curved``, …): ``{kind: rate}`` over the
    caption objects of that kind; kinds no caption names are left out. Pooled over kinds (weighted by their
    counts) it is :func:`motion_scores`' direction accuracy."""
    hits: dict[str, list[bool]] = {}
    for tracks in _tracks(videos, captions, config):
        for track in tracks:
            hits.setdefault(track.kind, []).append(motion_correct(track))
    return {kind: sum(h) / len(h) for kind, h in hits.items()}


__all__ = [
    "BOUNCE_PATH",
    "DIRECTION_NAMES",
    "Track",
    "background_flicker",
    "direction_by_kind",
    "identity_consistent",
    "motion_correct",
    "motion_scores",
    "path_length",
    "read_direction",
    "track_objects",
]
