"""Box constraints: the slots a Boximator model reads, and the box geometry around them.

A clip's constraints are :class:`BoxConditions`: ``N = 8`` slots per frame (Boximator §3.1), each holding a
box ``(x0, y0, x1, y1)`` normalised to [0, 1], a hard/soft flag, and the slot's object ID, drawn as an RGB
colour (:data:`ID_COLOURS`). An inactive slot is read as the learnable null token.

Geometry, all from the paper:

- **Border convention** (§3.3): a box of an object that is wholly outside the frame becomes a line on the
  frame border (:func:`to_frame` clamps the geometric box), so objects can enter and leave. Coordinates
  outside [0, 1] are therefore invalid input.
- **Soft boxes** (§3.3): in training, a hard box is widened on each side independently by a margin drawn
  from Beta(1, 8) × frame size (mean 1/9 of the frame), clamped to the frame (:func:`soften`).
- **Inference** (§3.4): boxes drawn on a few key frames are linearly interpolated to every frame and then
  *relaxed*: the interpolated boxes (not the drawn ones) are widened and flagged soft
  (:func:`interpolate_keyframes`, :func:`relax`). Motion-path mode slides a hard box along a drawn path and
  relaxes the result the same way (:func:`motion_path`).
- **Self-tracking** (§3.2): in training stages 1–2 the *target* video carries a 1-pixel outline of each
  constrained object's box in its ID colour (:func:`draw_outlines`).

Our choice [not in the paper]: slot ``j`` holds the ``j``-th object of the caption. In training each object's ID
colour is drawn at random per clip (:func:`~.pipeline.conditions_from_batch`), as the paper gives every object its
own ID, so an outline's colour can only be read from the box token; requests built here give slot ``j`` the ID
colour ``j``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..validation import check_int

SLOTS = 8

#: Object-ID colours (RGB in [0, 1]) for slots 0..7, chosen ≥0.3 away from every object colour of the
#: palette and off the background grey, so the oracle never mistakes a drawn outline for an object.
ID_COLOURS = torch.tensor(
    [
        [1.00, 1.00, 1.00],  # white
        [1.00, 0.55, 0.00],  # orange
        [0.55, 0.10, 0.95],  # purple
        [0.60, 1.00, 0.30],  # lime
        [1.00, 0.60, 0.70],  # pink
        [0.55, 0.30, 0.10],  # brown
        [0.10, 0.10, 0.50],  # navy
        [0.00, 0.50, 0.50],  # teal
    ]
)
ID_NAMES = ("white", "orange", "purple", "lime", "pink", "brown", "navy", "teal")

#: Mean of Beta(1, 8): the default inference relaxation margin, as a fraction of the frame.
SOFT_MARGIN_MEAN = 1.0 / 9.0


@dataclass
class BoxConditions:
    """``boxes (B,T,N,4)`` in [0, 1]; ``ids (B,N)`` slot → ID-colour index (−1: empty slot);
    ``hard (B,T,N)`` 1.0 for a hard box, 0.0 for a soft one; ``active (B,T,N)`` whether the slot carries a box
    on that frame (otherwise it is the null token)."""

    boxes: torch.Tensor
    ids: torch.Tensor
    hard: torch.Tensor
    active: torch.Tensor

    def validate(self, frames: int | None = None) -> BoxConditions:
        """Raise one clear ``ValueError`` for bad input; return ``self``."""
        b = self.boxes
        if b.dim() != 4 or b.shape[-1] != 4:
            raise ValueError(f"boxes must be (B, T, N, 4), got {tuple(b.shape)}")
        bsz, t, n, _ = b.shape
        if n > SLOTS:
            raise ValueError(f"at most {SLOTS} boxes per frame (one per object), got {n}")
        if frames is not None and t != frames:
            raise ValueError(f"boxes cover {t} frames but the video has {frames}")
        if self.ids.shape != (bsz, n) or self.hard.shape != (bsz, t, n) or self.active.shape != (bsz, t, n):
            raise ValueError(
                f"ids must be {(bsz, n)} and hard/active {(bsz, t, n)}, got {tuple(self.ids.shape)}, "
                f"{tuple(self.hard.shape)}, {tuple(self.active.shape)}"
            )
        for name, flags in (("hard", self.hard), ("active", self.active)):
            if flags.dtype != torch.bool and not bool(((flags == 0) | (flags == 1)).all()):
                raise ValueError(
                    f"{name} must be 0/1 (or bool) per box, got values {sorted(set(flags.flatten().tolist()))[:6]}"
                )
        if self.ids.is_floating_point() and not bool((self.ids == self.ids.round()).all()):
            raise ValueError(f"ids must be whole ID-colour indices, got {self.ids.tolist()}")
        on = self.active.bool()
        used = b[on]
        if not torch.isfinite(used).all():
            raise ValueError("boxes must be finite")
        if ((used < -1e-6) | (used > 1 + 1e-6)).any():
            raise ValueError(
                "box coordinates must lie in [0, 1]; a box outside the frame is a line on the border "
                "(use to_frame on geometric boxes)"
            )
        if ((used[:, 2] < used[:, 0]) | (used[:, 3] < used[:, 1])).any():
            raise ValueError("every box needs x1 >= x0 and y1 >= y0")
        if ((self.ids < -1) | (self.ids >= SLOTS)).any():
            raise ValueError(f"ids must be -1 (empty) or an ID-colour index in [0, {SLOTS})")
        if (on & (self.ids[:, None, :] < 0)).any():
            raise ValueError("an empty slot (id -1) cannot carry a box")
        for row in self.ids.tolist():
            taken = [i for i in row if i >= 0]
            if len(taken) != len(set(taken)):
                raise ValueError(f"each object needs its own ID colour, got ids {row}")
        return self

    def to(self, device) -> BoxConditions:
        return BoxConditions(*(v.to(device) for v in (self.boxes, self.ids, self.hard, self.active)))

    def select(self, index) -> BoxConditions:
        return BoxConditions(self.boxes[index], self.ids[index], self.hard[index], self.active[index])

    def without_boxes(self) -> BoxConditions:
        """The same slots, all null: the negative condition of Boximator's CFG and the 'no boxes' mode."""
        return replace(self, active=torch.zeros_like(self.active))

    @staticmethod
    def cat(items: list[BoxConditions]) -> BoxConditions:
        return BoxConditions(*(torch.cat([getattr(c, k) for c in items]) for k in ("boxes", "ids", "hard", "active")))


def empty_conditions(batch: int, frames: int, slots: int = SLOTS) -> BoxConditions:
    return BoxConditions(
        torch.zeros(batch, frames, slots, 4),
        torch.full((batch, slots), -1, dtype=torch.long),
        torch.ones(batch, frames, slots),
        torch.zeros(batch, frames, slots, dtype=torch.bool),
    )


def to_frame(boxes_full: torch.Tensor) -> torch.Tensor:
    """Geometric boxes (which may extend past the frame) → boxes inside [0, 1]. A box wholly outside the frame
    becomes a line on the border it is beyond (Boximator §3.3), one partly outside is cut at the border."""
    return boxes_full.clamp(0.0, 1.0)


def beta1_sample(shape: tuple[int, ...], b: float, generator: torch.Generator) -> torch.Tensor:
    """Beta(1, b) by inverting its CDF 1 − (1 − x)^b (exact, and seeded by ``generator``)."""
    u = torch.rand(shape, generator=generator)
    return 1.0 - (1.0 - u) ** (1.0 / b)


def soften(boxes: torch.Tensor, generator: torch.Generator, beta_b: float = 8.0) -> torch.Tensor:
    """Training-time soft boxes: each side pushed out by its own Beta(1, ``beta_b``) margin (× frame size),
    clamped to the frame (Boximator §3.3)."""
    m = beta1_sample(tuple(boxes.shape), beta_b, generator).to(boxes)
    sign = torch.tensor([-1.0, -1.0, 1.0, 1.0], device=boxes.device, dtype=boxes.dtype)
    return (boxes + sign * m).clamp(0.0, 1.0)


def relax(boxes: torch.Tensor, margin: float = SOFT_MARGIN_MEAN) -> torch.Tensor:
    """Inference-time relaxation: every side pushed out by ``margin`` (× frame size; default the mean of
    Beta(1, 8)), clamped to the frame."""
    if not 0.0 <= margin <= 1.0:
        raise ValueError(f"margin must be in [0, 1], got {margin}")
    sign = torch.tensor([-1.0, -1.0, 1.0, 1.0], device=boxes.device, dtype=boxes.dtype)
    return (boxes + sign * margin).clamp(0.0, 1.0)


def _check_box(box: torch.Tensor, what: str) -> torch.Tensor:
    box = torch.as_tensor(box, dtype=torch.float32)
    if box.shape != (4,):
        raise ValueError(f"{what} must be 4 numbers (x0, y0, x1, y1), got shape {tuple(box.shape)}")
    if not torch.isfinite(box).all():
        raise ValueError(f"{what} must be finite, got {box.tolist()}")
    if ((box < -1e-6) | (box > 1 + 1e-6)).any():
        raise ValueError(
            f"{what} must lie in [0, 1] (a box outside the frame is a line on the border), got {box.tolist()}"
        )
    if box[2] < box[0] or box[3] < box[1]:
        raise ValueError(f"{what} needs x1 >= x0 and y1 >= y0, got {box.tolist()}")
    return box


def interpolate_keyframes(keyframes: dict[int, torch.Tensor], frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes on a few frames → boxes ``(T, 4)`` on every frame by linear interpolation (held constant before
    the first and after the last key frame), and ``drawn (T,)``: True on the key frames."""
    frames = check_int("frames", frames, 1)
    if not isinstance(keyframes, dict) or not keyframes:
        raise ValueError("an empty trajectory: give a box on at least one frame")
    for k in keyframes:
        check_int("key frame", k, 0, frames - 1)
    keys = sorted(int(k) for k in keyframes)
    if keys[0] < 0 or keys[-1] >= frames:
        raise ValueError(f"key frames must be in [0, {frames}), got {keys}")
    kb = torch.stack([_check_box(keyframes[k], f"the box on frame {k}") for k in keys])
    out = torch.empty(frames, 4)
    for f in range(frames):
        if f <= keys[0]:
            out[f] = kb[0]
        elif f >= keys[-1]:
            out[f] = kb[-1]
        else:
            j = next(i for i in range(len(keys) - 1) if keys[i] <= f <= keys[i + 1])
            w = (f - keys[j]) / (keys[j + 1] - keys[j])
            out[f] = (1 - w) * kb[j] + w * kb[j + 1]
    drawn = torch.zeros(frames, dtype=torch.bool)
    drawn[keys] = True
    return out, drawn


def motion_path(box: torch.Tensor, path: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Motion-path mode: slide the hard ``box`` so that its centre follows the polyline ``path (P, 2)``
    (normalised points, the first being where the box starts) at constant speed over the clip. Returns boxes
    ``(T, 4)`` (cut at the border if they leave the frame) and ``drawn (T,)`` (True on the first and last
    frame, where the box is exactly the drawn one; relax the others)."""
    frames = check_int("frames", frames, 1)
    box = _check_box(box, "the box")
    path = torch.as_tensor(path, dtype=torch.float32)
    if path.dim() != 2 or path.shape[-1] != 2 or path.shape[0] < 1:
        raise ValueError(f"an empty trajectory: the path must be (P >= 1, 2) points, got shape {tuple(path.shape)}")
    if not torch.isfinite(path).all():
        raise ValueError("path points must be finite")
    centre = (box[:2] + box[2:]) / 2
    pts = torch.cat([centre[None], path - path[0] + centre]) if path.shape[0] > 1 else centre[None]
    seg = (pts[1:] - pts[:-1]).norm(dim=-1) if len(pts) > 1 else torch.zeros(0)
    cum = torch.cat([torch.zeros(1), seg.cumsum(0)])
    total = float(cum[-1])
    out = torch.empty(frames, 4)
    for f in range(frames):
        s = total * f / max(1, frames - 1)
        j = int(torch.searchsorted(cum, torch.tensor(s), right=True).clamp(1, len(cum) - 1)) - 1 if len(cum) > 1 else 0
        if len(cum) > 1 and seg[j] > 0:
            p = pts[j] + (pts[j + 1] - pts[j]) * (s - cum[j]) / seg[j]
        else:
            p = pts[min(j, len(pts) - 1)]
        out[f] = box + torch.cat([p - centre, p - centre])
    drawn = torch.zeros(frames, dtype=torch.bool)
    drawn[[0, frames - 1]] = True
    return to_frame(out), drawn


#: How :func:`request` constrains the frames between the drawn ones: ``"soft"`` the paper's inference (§3.4:
#: interpolated, relaxed and flagged soft), ``"none"`` no box at all on those frames (the slot is inactive there:
#: the paper's "without inference soft boxes" ablation, which drops the inserted boxes), ``"hard"`` the
#: interpolated boxes kept hard [ours, a contrast: on linear Motion-world paths it is close to the answer].
BETWEEN = ("soft", "none", "hard")


def request(
    trajectories: list[torch.Tensor],
    drawn: list[torch.Tensor],
    *,
    between: str = "soft",
    margin: float = SOFT_MARGIN_MEAN,
) -> BoxConditions:
    """One clip's constraints from per-object boxes ``(T, 4)`` and their drawn masks ``(T,)`` (object ``j`` in
    slot ``j``, ID colour ``j``): drawn boxes stay hard; the others follow ``between`` (:data:`BETWEEN`; with
    ``"soft"`` they are relaxed by ``margin`` × frame size on each side)."""
    if between not in BETWEEN:
        raise ValueError(f"between must be one of {BETWEEN}, got {between!r}")
    if not trajectories:
        raise ValueError("an empty trajectory: constrain at least one object")
    if len(trajectories) > SLOTS:
        raise ValueError(f"at most {SLOTS} objects can be constrained, got {len(trajectories)}")
    if len(drawn) != len(trajectories):
        raise ValueError(
            f"drawn must hold one mask per trajectory: {len(trajectories)} trajectories, {len(drawn)} masks"
        )
    frames = trajectories[0].shape[0]
    if frames < 1:
        raise ValueError("trajectories must cover at least one frame")
    cond = empty_conditions(1, frames)
    for j, (traj, d) in enumerate(zip(trajectories, drawn)):
        if traj.shape != (frames, 4) or d.shape != (frames,):
            raise ValueError(f"object {j}: boxes must be ({frames}, 4) and drawn ({frames},)")
        d = d.bool()
        relaxed = relax(traj, margin) if between == "soft" else traj
        cond.boxes[0, :, j] = torch.where(d[:, None], traj, relaxed)
        cond.hard[0, :, j] = torch.where(d, 1.0, 0.0 if between == "soft" else 1.0)
        cond.ids[0, j] = j
        cond.active[0, :, j] = d if between == "none" else True
    return cond.validate(frames)


def draw_outlines(
    videos: torch.Tensor,
    boxes: torch.Tensor,
    visible: torch.Tensor,
    ids: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Self-tracking targets: each visible object's box outlined 1 pixel outside its tight box, in its ID colour.

    ``videos (B,T,3,H,W)`` in [0, 1]; ``boxes (B,T,K,4)`` tight normalised boxes of the visible pixels;
    ``visible (B,T,K)``; ``ids (B,K)`` (−1: not constrained, no outline); ``keep (B,T,H,W)``: pixels never
    painted over (we pass the objects' pixels, so an outline passes *behind* a neighbouring object and the
    oracle still sees every object whole). Outlines are cut at the border."""
    b, t, _, h, w = videos.shape
    out = videos.clone()
    ys = torch.arange(h, device=videos.device).view(h, 1)
    xs = torch.arange(w, device=videos.device).view(1, w)
    colours = ID_COLOURS.to(videos)
    for k in range(boxes.shape[2]):
        px = torch.round(boxes[:, :, k] * torch.tensor([w, h, w, h], device=boxes.device)).long()
        x0, y0, x1, y1 = (px[..., i].view(b, t, 1, 1) for i in range(4))
        x0, y0 = x0 - 1, y0 - 1  # the ring just outside the object's pixels [x0, x1) × [y0, y1)
        inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        edge = (xs == x0) | (xs == x1) | (ys == y0) | (ys == y1)
        on = inside & edge & visible[:, :, k].view(b, t, 1, 1) & (ids[:, k] >= 0).view(b, 1, 1, 1)
        if keep is not None:
            on = on & ~keep
        col = colours[ids[:, k].clamp(min=0)].view(b, 1, 3, 1, 1)
        out = torch.where(on[:, :, None], col, out)
    return out
