"""The Puppet world: an articulated 2-D figure, per-identity appearance, posed by a motion generator (chapter 05).

MagicAnimate (Xu et al. 2023) animates a reference image I_ref along a DensePose sequence p^{1:K}. Here every
ingredient is exact:

- **the figure**: a head and a torso, two-segment arms and legs — ten parts, each a capsule (a segment with a
  radius, limbs 3 px wide at 32 px) or a disc (the head), composited back to front;
- **a pose** (:class:`Pose` fields, one value per frame): the hip position, torso lean, shoulder / elbow / hip /
  knee angles (0 points down, positive swings towards +x) and ``facing`` ∈ [−1, 1], the horizontal scale of the
  figure (a 2-D turn: at −1 it is mirrored, and the near and far limbs swap);
- **an identity** (an integer): a seeded appearance — a skin colour for the head and hands (lower arms), a shirt
  colour for the torso and upper arms, optional torso stripes in a second colour, a trouser colour — so the same
  identity renders the same in every pose;
- **motions**: walk, wave, jump and turn, each with a seeded period, phase and amplitude;
- **the DensePose-like map** of a frame: per pixel the part index I ∈ {0 (background), 1…10} and the part's own
  coordinates (U along the part, V across it, both in [0, 1]) — the "IUV" image MagicAnimate's ControlNet reads,
  here computed exactly from the pose.

Because any identity renders in any pose, the ground-truth animation of a reference in a pose sequence is the
identity rendered along that sequence: :func:`make_puppets` returns it beside the reference image (the same
identity in a pose drawn from another clip).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..configs import JSONConfig
from .render import PLAIN_BACKGROUND, pixel_grid

PART_NAMES: tuple[str, ...] = (
    "background",
    "head",
    "torso",
    "left upper arm",
    "left lower arm",
    "right upper arm",
    "right lower arm",
    "left upper leg",
    "left lower leg",
    "right upper leg",
    "right lower leg",
)
NUM_PARTS = len(PART_NAMES) - 1  # 10 body parts; index 0 is the background
MOTIONS: tuple[str, ...] = ("walk", "wave", "jump", "turn")
NUM_IDENTITIES = 10_000
#: identities below this are drawn in training; the rest are held out for evaluation and the widget
TRAIN_IDENTITIES = 9_000

# the figure's proportions at size 32 (scaled with the canvas)
_TORSO, _NECK, _HEAD_R, _TORSO_R = 7.0, 3.5, 3.0, 2.6
_UPPER_ARM, _LOWER_ARM, _UPPER_LEG, _LOWER_LEG, _LIMB_R = 4.5, 4.5, 5.5, 5.5, 1.55
_SHOULDER_DX, _HIP_DX = 2.0, 1.4

# a palette the appearances draw from: distinct from the grey background and from each other
APPEARANCE_PALETTE = torch.tensor(
    [
        [0.90, 0.15, 0.15],
        [0.15, 0.75, 0.20],
        [0.15, 0.30, 0.95],
        [0.95, 0.85, 0.10],
        [0.85, 0.20, 0.85],
        [0.10, 0.85, 0.90],
        [0.98, 0.55, 0.10],
        [0.95, 0.95, 0.95],
        [0.55, 0.30, 0.10],
        [0.55, 0.90, 0.55],
    ]
)
SKIN_TONES = torch.tensor([[0.98, 0.80, 0.65], [0.85, 0.62, 0.45], [0.60, 0.40, 0.25], [0.40, 0.26, 0.16]])


@dataclass(frozen=True)
class PuppetConfig(JSONConfig):
    size: int = 32
    frames: int = 8
    background: float = PLAIN_BACKGROUND


POSE_FIELDS: tuple[str, ...] = (
    "x",
    "y",
    "lean",
    "shoulder_l",
    "elbow_l",
    "shoulder_r",
    "elbow_r",
    "hip_l",
    "knee_l",
    "hip_r",
    "knee_r",
    "facing",
)


@dataclass
class PuppetBatch:
    """A batch of clips. ``frames (B,T,3,H,W)`` in [0, 1]: the identity rendered along the poses (the exact
    animation); ``parts (B,T,H,W)`` the part index (0 background); ``uv (B,T,2,H,W)`` the part coordinates;
    ``reference (B,3,H,W)``: the same identity in another pose; ``poses (B,T,12)`` in :data:`POSE_FIELDS` order;
    ``identities (B,)``, ``motions`` (names)."""

    frames: torch.Tensor
    parts: torch.Tensor
    uv: torch.Tensor
    reference: torch.Tensor
    reference_parts: torch.Tensor
    reference_uv: torch.Tensor
    poses: torch.Tensor
    identities: torch.Tensor
    motions: list[str]

    def densepose(self) -> torch.Tensor:
        """The IUV condition ``(B,T,3,H,W)`` in [−1, 1]: ``(2I/10 − 1, 2U − 1, 2V − 1)``, all −1 on the background."""
        return densepose_map(self.parts, self.uv)


def densepose_map(parts: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """IUV image in [−1, 1] from part indices ``(..., H, W)`` and coordinates ``(..., 2, H, W)``."""
    fg = (parts > 0).unsqueeze(-3)
    iuv = torch.cat([(parts.float() / NUM_PARTS).unsqueeze(-3), uv], dim=-3)
    return torch.where(fg, iuv * 2 - 1, torch.full_like(iuv, -1.0))


def check_identities(identities) -> torch.Tensor:
    ids = torch.as_tensor(identities, dtype=torch.long).reshape(-1)
    if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= NUM_IDENTITIES:
        raise ValueError(f"identities must be integers in [0, {NUM_IDENTITIES}), got {ids.tolist()[:8]}")
    return ids


def appearance(identities) -> dict[str, torch.Tensor]:
    """Per-identity colours ``(B, 3)``: ``skin``, ``shirt``, ``stripe``, ``trousers``, and ``striped (B,)`` —
    each identity's own seeded draw, so it is the same in every clip."""
    ids = check_identities(identities)
    out: dict[str, list] = {"skin": [], "shirt": [], "stripe": [], "trousers": [], "striped": []}
    for i in ids.tolist():
        g = torch.Generator().manual_seed(1_000_003 * 7 + i)
        shirt, stripe, trousers = torch.randperm(len(APPEARANCE_PALETTE), generator=g)[:3].tolist()
        out["skin"].append(SKIN_TONES[int(torch.randint(len(SKIN_TONES), (1,), generator=g))])
        out["shirt"].append(APPEARANCE_PALETTE[shirt])
        out["stripe"].append(APPEARANCE_PALETTE[stripe])
        out["trousers"].append(APPEARANCE_PALETTE[trousers])
        out["striped"].append(torch.rand((), generator=g) < 0.5)
    return {k: torch.stack(v) for k, v in out.items()}


def _rot(angle: torch.Tensor, length: float, facing: torch.Tensor) -> torch.Tensor:
    """A segment of ``length`` pointing down at angle 0, swung towards +x by ``angle``, x scaled by ``facing``."""
    return torch.stack([torch.sin(angle) * length * facing, torch.cos(angle) * length], -1)


def skeleton(poses: torch.Tensor, size: int = 32) -> dict[str, torch.Tensor]:
    """Joint positions ``(N, 2)`` (x, y in pixels) of poses ``(N, 12)``."""
    s = size / 32
    p = dict(zip(POSE_FIELDS, poses.unbind(-1)))
    f = p["facing"]
    hip = torch.stack([p["x"], p["y"]], -1)
    up = torch.stack([torch.sin(p["lean"]) * f, -torch.cos(p["lean"])], -1)
    neck = hip + up * _TORSO * s
    side = torch.stack([f, torch.zeros_like(f)], -1)
    j = {"hip": hip, "neck": neck, "head": neck + up * _NECK * s}
    for k in ("l", "r"):
        sign = 1.0 if k == "l" else -1.0
        shoulder = neck + side * sign * _SHOULDER_DX * s
        elbow = shoulder + _rot(p[f"shoulder_{k}"], _UPPER_ARM * s, f)
        hand = elbow + _rot(p[f"shoulder_{k}"] + p[f"elbow_{k}"], _LOWER_ARM * s, f)
        hip_k = hip + side * sign * _HIP_DX * s
        knee = hip_k + _rot(p[f"hip_{k}"], _UPPER_LEG * s, f)
        foot = knee + _rot(p[f"hip_{k}"] - p[f"knee_{k}"], _LOWER_LEG * s, f)
        j |= {f"shoulder_{k}": shoulder, f"elbow_{k}": elbow, f"hand_{k}": hand}
        j |= {f"hip_{k}": hip_k, f"knee_{k}": knee, f"foot_{k}": foot}
    return j


def _capsule(a: torch.Tensor, b: torch.Tensor, radius, ys, xs):
    """Mask, U (along a→b) and V (across, left to right of the direction) of a capsule, each ``(N, H, W)``."""
    d = b - a
    length2 = (d * d).sum(-1).clamp(min=1e-6)
    px, py = xs[None] - a[:, 0, None, None], ys[None] - a[:, 1, None, None]
    u = ((px * d[:, 0, None, None] + py * d[:, 1, None, None]) / length2[:, None, None]).clamp(0, 1)
    cx, cy = px - u * d[:, 0, None, None], py - u * d[:, 1, None, None]
    radius = torch.as_tensor(radius, dtype=torch.float32).reshape(-1, 1, 1)
    inside = cx * cx + cy * cy <= radius * radius
    norm = length2.sqrt()[:, None, None]
    across = (cx * -d[:, 1, None, None] + cy * d[:, 0, None, None]) / norm  # signed distance from the axis
    v = (across / radius).clamp(-1, 1) * 0.5 + 0.5
    return inside, u, v


def render_poses(poses: torch.Tensor, identities, size: int = 32, background: float = PLAIN_BACKGROUND):
    """Render poses ``(N, 12)`` of ``identities (N,)`` → ``images (N,3,H,W)`` in [0,1], ``parts (N,H,W)``,
    ``uv (N,2,H,W)``. The far limbs are drawn first, then the torso and head, then the near limbs; which side is
    near follows the sign of ``facing``."""
    if poses.dim() != 2 or poses.shape[1] != len(POSE_FIELDS):
        raise ValueError(f"poses must be (N, {len(POSE_FIELDS)}), got {tuple(poses.shape)}")
    ids = check_identities(identities)
    if ids.numel() != poses.shape[0]:
        raise ValueError(f"one identity per pose: {ids.numel()} identities for {poses.shape[0]} poses")
    n, s = poses.shape[0], size / 32
    ys, xs = pixel_grid(size, size)
    j = skeleton(poses.float(), size)
    facing = poses[:, POSE_FIELDS.index("facing")].float()
    torso_r = _TORSO_R * s * facing.abs().clamp(min=0.55)
    segments = {
        2: (j["hip"], j["neck"], torso_r),
        3: (j["shoulder_l"], j["elbow_l"], _LIMB_R * s),
        4: (j["elbow_l"], j["hand_l"], _LIMB_R * s),
        5: (j["shoulder_r"], j["elbow_r"], _LIMB_R * s),
        6: (j["elbow_r"], j["hand_r"], _LIMB_R * s),
        7: (j["hip_l"], j["knee_l"], _LIMB_R * s),
        8: (j["knee_l"], j["foot_l"], _LIMB_R * s),
        9: (j["hip_r"], j["knee_r"], _LIMB_R * s),
        10: (j["knee_r"], j["foot_r"], _LIMB_R * s),
    }
    masks = torch.zeros(n, NUM_PARTS + 1, size, size, dtype=torch.bool)
    us = torch.zeros(n, NUM_PARTS + 1, size, size)
    vs = torch.zeros_like(us)
    head = j["head"]
    dx, dy = xs[None] - head[:, 0, None, None], ys[None] - head[:, 1, None, None]
    r = _HEAD_R * s
    masks[:, 1] = dx * dx + dy * dy <= r * r
    us[:, 1] = (dy / r).clamp(-1, 1) * 0.5 + 0.5
    mirror = torch.where(facing >= 0, 1.0, -1.0)[:, None, None]
    vs[:, 1] = (dx * mirror / r).clamp(-1, 1) * 0.5 + 0.5
    for k, (a, b, rad) in segments.items():
        masks[:, k], us[:, k], vs[:, k] = _capsule(a, b, rad, ys, xs)
    # depth: far limbs 1, torso 2, head 3, near limbs 4 (the left side is near when facing > 0)
    near_left = (facing >= 0).float()[:, None]
    depth = torch.zeros(n, NUM_PARTS + 1)
    depth[:, 1], depth[:, 2] = 3.0, 2.0
    depth[:, [3, 4, 7, 8]] = 1 + 3 * near_left
    depth[:, [5, 6, 9, 10]] = 4 - 3 * near_left
    depth[:, [7, 8, 9, 10]] -= 0.5  # legs behind arms on the same side
    score = torch.where(masks, depth[:, :, None, None], torch.full_like(us, -1.0))
    score[:, 0] = 0.0
    parts = score.argmax(1)
    u = us.gather(1, parts[:, None]).squeeze(1)
    v = vs.gather(1, parts[:, None]).squeeze(1)
    fg = parts > 0
    uv = torch.stack([torch.where(fg, u, 0.0), torch.where(fg, v, 0.0)], 1)
    look = appearance(ids)
    colours = torch.zeros(n, NUM_PARTS + 1, 3)
    colours[:, 0] = background
    colours[:, [1, 4, 6]] = look["skin"][:, None]
    colours[:, [2, 3, 5]] = look["shirt"][:, None]
    colours[:, [7, 8, 9, 10]] = look["trousers"][:, None]
    img = colours.gather(1, parts.flatten(1)[..., None].expand(-1, -1, 3)).view(n, size, size, 3).permute(0, 3, 1, 2)
    stripe = (parts == 2) & look["striped"][:, None, None] & ((u * 3).floor() % 2 == 1)
    img = torch.where(stripe[:, None], look["stripe"][:, :, None, None].expand_as(img), img)
    return img.contiguous(), parts, uv


def motion_poses(motion: str, frames: int, generator: torch.Generator, size: int = 32, start: int = 0):
    """Poses ``(frames, 12)`` of one clip of ``motion`` (seeded period, phase, amplitude, place), frames
    ``start … start + frames − 1`` of the motion (so a long sequence and its windows agree)."""
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    s = size / 32

    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    period, phase = u(10.0, 16.0), u(0, 2 * math.pi)
    facing0 = 1.0 if torch.rand((), generator=generator) < 0.5 else -1.0
    x0, y0, amp = u(13.0, 19.0) * s, u(17.0, 18.5) * s, u(0.8, 1.2)
    t = torch.arange(start, start + frames, dtype=torch.float32)
    w = 2 * math.pi * t / period + phase
    zero = torch.zeros_like(t)
    p = {f: zero.clone() for f in POSE_FIELDS}
    p["x"], p["y"], p["facing"] = zero + x0, zero + y0, zero + facing0
    p["shoulder_l"], p["shoulder_r"] = zero + 0.25, zero - 0.25
    p["elbow_l"], p["elbow_r"] = zero + 0.2, zero - 0.2
    p["hip_l"], p["hip_r"] = zero + 0.12, zero - 0.12
    if motion == "walk":
        # back and forth across the canvas, the stride swinging hips and arms in opposition
        travel = 5.0 * s * torch.sin(2 * math.pi * t / (4 * period) + phase)
        p["x"] = 16.0 * s + travel
        p["facing"] = torch.where(torch.cos(2 * math.pi * t / (4 * period) + phase) >= 0, 1.0, -1.0)
        p["hip_l"], p["hip_r"] = 0.5 * amp * torch.sin(w), -0.5 * amp * torch.sin(w)
        p["knee_l"], p["knee_r"] = 0.5 * amp * torch.relu(torch.cos(w)), 0.5 * amp * torch.relu(-torch.cos(w))
        p["shoulder_l"], p["shoulder_r"] = -0.6 * amp * torch.sin(w), 0.6 * amp * torch.sin(w)
        p["elbow_l"] = p["elbow_r"] = zero - 0.3
        p["y"] = y0 - 0.5 * s * torch.cos(2 * w).abs()
    elif motion == "wave":
        p["shoulder_l"] = zero + 2.5 * amp
        p["elbow_l"] = 0.7 * torch.sin(w)
        p["lean"] = 0.08 * torch.sin(w)
    elif motion == "jump":
        air = torch.sin(w).clamp(min=0)
        p["y"] = y0 - 3.0 * s * amp * air
        crouch = 0.7 * torch.relu(-torch.sin(w))
        p["hip_l"], p["hip_r"] = 0.12 + 0.5 * crouch, -0.12 - 0.5 * crouch
        p["knee_l"], p["knee_r"] = crouch, crouch
        p["shoulder_l"], p["shoulder_r"] = 0.3 + 2.0 * air, -0.3 - 2.0 * air
    else:  # turn: the facing sweeps through side view, the arms held out
        p["facing"] = torch.cos(w)
        p["shoulder_l"], p["shoulder_r"] = zero + 0.9, zero - 0.9
        p["elbow_l"], p["elbow_r"] = zero + 0.4, zero - 0.4
    return torch.stack([p[f] for f in POSE_FIELDS], -1)


def make_puppets(
    n: int,
    seed: int,
    config: PuppetConfig = PuppetConfig(),
    *,
    identities=None,
    motions: list[str] | None = None,
    frames: int | None = None,
    split: str = "train",
) -> PuppetBatch:
    """``n`` clips of seed ``seed``: identities drawn from the ``split`` (``"train"`` or ``"eval"``, disjoint)
    unless given, motions drawn from :data:`MOTIONS` unless given, ``frames`` (default ``config.frames``)."""
    from ..validation import check_choice, check_int

    n = check_int("n", n, 1, 100_000)
    frames = check_int("frames", frames if frames is not None else config.frames, 1, 1_000)
    check_choice("split", split, ("train", "eval"))
    g = torch.Generator().manual_seed(int(seed))
    if identities is None:
        lo, hi = (0, TRAIN_IDENTITIES) if split == "train" else (TRAIN_IDENTITIES, NUM_IDENTITIES)
        identities = torch.randint(lo, hi, (n,), generator=g)
    ids = check_identities(identities)
    if ids.numel() != n:
        raise ValueError(f"identities must have n = {n} entries, got {ids.numel()}")
    if motions is None:
        motions = [MOTIONS[int(i)] for i in torch.randint(len(MOTIONS), (n,), generator=g)]
    if len(motions) != n:
        raise ValueError(f"motions must have n = {n} entries, got {len(motions)}")
    poses = torch.stack([motion_poses(m, frames, g, config.size) for m in motions])
    # the reference: the same identity in a pose from another clip of a random motion
    ref_motions = [MOTIONS[int(i)] for i in torch.randint(len(MOTIONS), (n,), generator=g)]
    ref_poses = torch.stack(
        [motion_poses(m, 1, g, config.size, start=int(torch.randint(64, (1,), generator=g))) for m in ref_motions]
    )[:, 0]
    img, parts, uv = render_poses(poses.flatten(0, 1), ids.repeat_interleave(frames), config.size, config.background)
    ref, ref_parts, ref_uv = render_poses(ref_poses, ids, config.size, config.background)
    size = config.size
    return PuppetBatch(
        frames=img.view(n, frames, 3, size, size),
        parts=parts.view(n, frames, size, size),
        uv=uv.view(n, frames, 2, size, size),
        reference=ref,
        reference_parts=ref_parts,
        reference_uv=ref_uv,
        poses=poses,
        identities=ids,
        motions=list(motions),
    )
