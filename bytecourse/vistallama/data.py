"""Narrated Motion-world "videos" for the Vista-LLaMA chapter, their token sequences, and the narration oracle.

An **episode** is K segments of the Motion world played one after another; each segment is a short one-object clip
(3 frames). Its **narration** names the segments in order:

    "a red circle moves left then a blue square bounces then a green triangle enters from the top"

and a **frame-order question** asks which of two objects came first ("which came first the red circle or the blue
square" → "the red circle"). Ground truth is exact, so the oracle parses a generated narration into facts — each
item's object (colour + shape, in its position in the order) and its motion — and checks every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import text
from ..worlds import MotionConfig, make_motion

# the chapter's vocabulary: the worlds' words plus a few for prompts, order and questions
SPECIAL = ("<pad>", "<bos>", "<eos>", "<fill>")
PROMPT_WORDS = ("describe", "then", "which", "came", "first", "or")
VOCAB: tuple[str, ...] = (*SPECIAL, *PROMPT_WORDS, *[w for w in text.VOCAB if w != text.PAD])
WORD_TO_ID = {w: i for i, w in enumerate(VOCAB)}
PAD_ID, BOS_ID, EOS_ID, FILL_ID = 0, 1, 2, 3
FRAMES_PER_SEGMENT = 3


@dataclass
class Episodes:
    """videos (B, K·3, 3, H, W) (padded with empty frames past each episode's K segments), segments (B,) = K,
    per-segment colour / shape / motion / direction indices (B, K_max), narrations and per-segment phrases."""

    videos: torch.Tensor
    segments: torch.Tensor
    colours: torch.Tensor
    shapes: torch.Tensor
    motion: torch.Tensor
    direction: torch.Tensor
    phrases: list[list[str]]
    narrations: list[str]


def make_episodes(n: int, seed: int, segments: tuple[int, int] = (2, 4), size: int = 32) -> Episodes:
    """``n`` episodes with K uniform in ``segments`` (inclusive); same seed → same episodes."""
    lo, hi = segments
    if not 1 <= lo <= hi <= 12:
        raise ValueError(f"segments must satisfy 1 ≤ lo ≤ hi ≤ 12, got {segments}")
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    g = torch.Generator().manual_seed(int(seed))
    ks = torch.randint(lo, hi + 1, (n,), generator=g)
    clips = make_motion(
        n * hi,
        int(seed) * 7919 + 1,
        MotionConfig(frames=FRAMES_PER_SEGMENT, size=size, max_objects=1, caption_length=12),
        num_objects=1,
    )
    v = clips.videos.view(n, hi, FRAMES_PER_SEGMENT, 3, size, size)
    mask = (torch.arange(hi)[None] < ks[:, None]).float()
    videos = (v * mask[:, :, None, None, None, None]).flatten(1, 2)
    phrases = [[clips.captions[i * hi + k] for k in range(int(ks[i]))] for i in range(n)]
    view = lambda t: t.view(n, hi)  # noqa: E731
    return Episodes(
        videos,
        ks,
        view(clips.colours[:, 0]),
        view(clips.shapes[:, 0]),
        view(clips.motion[:, 0]),
        view(clips.direction[:, 0]),
        phrases,
        [" then ".join(p) for p in phrases],
    )


def encode_words(words: list[str]) -> list[int]:
    bad = [w for w in words if w not in WORD_TO_ID]
    if bad:
        raise ValueError(f"words {bad} are not in the chapter's vocabulary")
    return [WORD_TO_ID[w] for w in words]


def decode_ids(ids) -> str:
    out = []
    for t in ids:
        t = int(t)
        if t == EOS_ID:
            break
        if t not in (PAD_ID, BOS_ID, FILL_ID):
            out.append(VOCAB[t])
    return " ".join(out)


def order_question(ep: Episodes, i: int, generator: torch.Generator) -> tuple[str, str] | None:
    """A "which came first" question about two segments with different objects, and its answer (None if all equal)."""
    k = int(ep.segments[i])
    objs = [(int(ep.colours[i, j]), int(ep.shapes[i, j])) for j in range(k)]
    pairs = [
        (a, b)
        for a in range(k)
        for b in range(a + 1, k)
        if objs[a] != objs[b] and objs.count(objs[a]) == 1 and objs.count(objs[b]) == 1
    ]
    if not pairs:
        return None
    a, b = pairs[int(torch.randint(0, len(pairs), (1,), generator=generator))]
    name = lambda j: f"{text.COLOUR_NAMES[objs[j][0]]} {text.SHAPE_NAMES[objs[j][1]]}"  # noqa: E731
    first, second = (a, b) if torch.rand(1, generator=generator) < 0.5 else (b, a)
    return f"which came first the {name(first)} or the {name(second)}", f"the {name(a)}"


# ------------------------------------------------------------------------------------------------ the oracle


@dataclass
class Fact:
    kind: str  # "object" (colour + shape at this place in the order) or "motion"
    item: int
    stated: str
    true: bool


def parse_narration(narration: str) -> list[list[str]]:
    """Items (word lists) of a narration, split on "then"."""
    items = [part.split() for part in narration.split(" then ")] if narration.strip() else []
    return [w for w in items if w]


_MOTION_VERBS = ("moves", "curves", "bounces", "enters", "leaves")


def _motion_words(words: list[str]) -> str:
    """An item's motion phrase wherever it stands: from its first motion verb up to the next article, colour or
    shape word ("red circle moves left" → "moves left"). Without a motion verb, whatever follows "a <colour>
    <shape>" is the stated motion (and is false), as before."""
    start = next((j for j, w in enumerate(words) if w in _MOTION_VERBS), None)
    if start is None:
        return " ".join(words[3:])
    stop = next(
        (j for j in range(start + 1, len(words)) if words[j] in ("a", *text.COLOUR_NAMES, *text.SHAPE_NAMES)),
        len(words),
    )
    return " ".join(words[start:stop])


def check_narration(narration: str, ep: Episodes, i: int) -> list[Fact]:
    """Every fact the narration states, checked against episode i: item k's object must be segment k's object (this
    checks the order of events too), and its motion phrase must be segment k's motion. Items past the last segment
    are false."""
    from ..validation import check_int
    from ..worlds.motion import _motion_phrase

    if not isinstance(narration, str):
        raise ValueError(f"narration must be a string, got {type(narration).__name__}")
    i = check_int("i", i, 0, len(ep.segments) - 1)
    facts = []
    k = int(ep.segments[i])
    for item, words in enumerate(parse_narration(narration)):
        obj = next(
            (
                (text.COLOUR_NAMES.index(a), text.SHAPE_NAMES.index(b))
                for a, b in zip(words, words[1:])
                if a in text.COLOUR_NAMES and b in text.SHAPE_NAMES
            ),
            None,
        )
        if obj is not None:
            ok = item < k and obj == (int(ep.colours[i, item]), int(ep.shapes[i, item]))
            facts.append(Fact("object", item, f"{text.COLOUR_NAMES[obj[0]]} {text.SHAPE_NAMES[obj[1]]}", ok))
        motion = _motion_words(words)
        if motion:
            ok = item < k and motion == _motion_phrase(int(ep.motion[i, item]), int(ep.direction[i, item]))
            facts.append(Fact("motion", item, motion, ok))
    return facts


def hallucination_rate(facts: list[Fact]) -> float:
    """Fraction of stated facts that are false (0 for a narration that states nothing)."""
    return sum(not f.true for f in facts) / len(facts) if facts else 0.0
