"""The worlds' small fixed vocabulary and a whitespace tokenizer.

Every caption in the course is made of these words, so a caption is exactly parseable back into facts
(the oracle uses :func:`parse_shapes_caption`) and a text encoder needs only a tiny embedding table.
Token id 0 is padding; a caption of all padding is the *null condition* used by classifier-free guidance.
"""

from __future__ import annotations

import torch

PAD = "<pad>"
COLOUR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan")
SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
MOTION_WORDS: tuple[str, ...] = (
    "moves",
    "bounces",
    "curves",
    "enters",
    "leaves",
    "from",
    "to",
    "the",
    "left",
    "right",
    "up",
    "down",
    "top",
    "bottom",
)
FUNCTION_WORDS: tuple[str, ...] = ("a", "and")

VOCAB: tuple[str, ...] = (PAD, *FUNCTION_WORDS, *COLOUR_NAMES, *SHAPE_NAMES, *MOTION_WORDS)
WORD_TO_ID: dict[str, int] = {w: i for i, w in enumerate(VOCAB)}
VOCAB_SIZE = len(VOCAB)
PAD_ID = 0


def encode(texts: list[str] | str, length: int) -> torch.Tensor:
    """Token ids ``(B, length)`` for whitespace-separated captions, right-padded with ``PAD_ID``."""
    if isinstance(texts, str):
        texts = [texts]
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    out = torch.zeros(len(texts), length, dtype=torch.long)
    for i, text in enumerate(texts):
        words = text.split()
        if len(words) > length:
            raise ValueError(f"caption {text!r} has {len(words)} words, more than length={length}")
        for j, w in enumerate(words):
            if w not in WORD_TO_ID:
                raise ValueError(f"word {w!r} in caption {text!r} is not in the vocabulary {VOCAB}")
            out[i, j] = WORD_TO_ID[w]
    return out


def decode(ids: torch.Tensor) -> list[str]:
    """Inverse of :func:`encode` (padding dropped)."""
    if ids.dim() == 1:
        ids = ids[None]
    return [" ".join(VOCAB[int(t)] for t in row if int(t) != PAD_ID) for row in ids]


def shapes_caption(colours: list[int], shapes: list[int]) -> str:
    """``"a red circle and a blue square"`` from colour and shape indices."""
    return " and ".join(f"a {COLOUR_NAMES[c]} {SHAPE_NAMES[s]}" for c, s in zip(colours, shapes))


def parse_shapes_caption(text: str) -> list[tuple[int, int]]:
    """``[(colour, shape), ...]`` from a Shapes caption (or the object phrases of a Motion caption).

    Raises ``ValueError`` if the caption names no object.
    """
    words = text.split()
    objects = []
    for i in range(len(words) - 1):
        if words[i] in COLOUR_NAMES and words[i + 1] in SHAPE_NAMES:
            objects.append((COLOUR_NAMES.index(words[i]), SHAPE_NAMES.index(words[i + 1])))
    if not objects:
        raise ValueError(f"caption {text!r} names no '<colour> <shape>' object")
    return objects


#: motion kinds and directions as the Motion world writes them (``bytecourse.worlds.motion``)
MOTION_KIND_WORDS: dict[str, str] = {
    "moves": "linear",
    "curves": "curved",
    "bounces": "bouncing",
    "enters": "entering",
    "leaves": "leaving",
}
DIRECTION_NAMES: tuple[str, ...] = ("left", "right", "up", "down")
SIDE_NAMES: tuple[str, ...] = ("left", "right", "top", "bottom")  # in DIRECTION_NAMES order: "top" is the "up" side


def parse_motion_caption(text: str) -> list[tuple[int, int, str, int | None]]:
    """``[(colour, shape, kind, direction), ...]`` from a Motion caption, one per object phrase.

    ``kind`` is one of ``linear, curved, bouncing, entering, leaving``; ``direction`` indexes
    :data:`DIRECTION_NAMES` — the direction of travel for linear/curved, the *side* for entering (the side it
    enters from) and leaving (the side it leaves to), ``None`` for bouncing. Raises ``ValueError`` for a phrase
    without a motion."""
    objects = []
    for phrase in text.split(" and "):
        words = phrase.split()
        if len(words) < 4 or words[0] != "a" or words[1] not in COLOUR_NAMES or words[2] not in SHAPE_NAMES:
            raise ValueError(f"{phrase!r} in caption {text!r} is not 'a <colour> <shape> <motion>'")
        kind = MOTION_KIND_WORDS.get(words[3])
        rest = words[4:]
        if kind in ("linear", "curved") and len(rest) == 1 and rest[0] in DIRECTION_NAMES:
            direction: int | None = DIRECTION_NAMES.index(rest[0])
        elif kind == "bouncing" and not rest:
            direction = None
        elif (
            kind in ("entering", "leaving")
            and len(rest) == 3
            and rest[:2] in (["from", "the"], ["to", "the"])
            and rest[2] in SIDE_NAMES
        ):
            direction = SIDE_NAMES.index(rest[2])
        else:
            raise ValueError(f"{phrase!r} in caption {text!r} has no motion this world draws")
        objects.append((COLOUR_NAMES.index(words[1]), SHAPE_NAMES.index(words[2]), kind, direction))
    return objects


#: words of the Events world's paragraphs (chapter 08 COSA) that the image and video captions never use; they sit
#: outside :data:`VOCAB` so the image and video models' embedding tables (and their checkpoints) stay as they are.
#: A chapter that reads paragraphs builds its own vocabulary from ``VOCAB + EVENT_WORDS``.
EVENT_WORDS: tuple[str, ...] = ("then", "appears", "turns")
EVENT_KINDS: tuple[str, ...] = ("appears", "turns", "moves", "leaves")


def event_phrase(kind: str, colour: int, shape: int, arg: int | None = None) -> str:
    """One event of an Events paragraph: ``"a blue square appears"``, ``"the red circle turns green"`` (``arg``:
    the new colour), ``"the red circle moves left"`` (``arg``: index into :data:`DIRECTION_NAMES`), ``"the red
    circle leaves"``. Colours are distinct within a scene, so "the red circle" names one object."""
    name = f"{COLOUR_NAMES[colour]} {SHAPE_NAMES[shape]}"
    if kind == "appears":
        return f"a {name} appears"
    if kind == "turns":
        return f"the {name} turns {COLOUR_NAMES[arg]}"
    if kind == "moves":
        return f"the {name} moves {DIRECTION_NAMES[arg]}"
    if kind == "leaves":
        return f"the {name} leaves"
    raise ValueError(f"kind must be one of {EVENT_KINDS}, got {kind!r}")


def parse_event_paragraph(paragraph: str) -> tuple[list[tuple[int, int]], list[tuple[str, int, int, int | None]]]:
    """The first frame's objects ``[(colour, shape), ...]`` and the events ``[(kind, colour, shape, arg), ...]``
    of a paragraph ``"<first frame> then <event> then <event> ..."`` (the inverse of the Events world's writer).
    Raises ``ValueError`` for a paragraph this world does not write."""
    parts = paragraph.split(" then ")
    first = parse_shapes_caption(parts[0])
    if parts[0] != shapes_caption([c for c, _ in first], [s for _, s in first]):
        raise ValueError(f"{parts[0]!r} in {paragraph!r} is not a first-frame caption")
    events = []
    for part in parts[1:]:
        w = part.split()
        ok = len(w) >= 3 and w[1] in COLOUR_NAMES and w[2] in SHAPE_NAMES
        c, s = (COLOUR_NAMES.index(w[1]), SHAPE_NAMES.index(w[2])) if ok else (-1, -1)
        if ok and w[0] == "a" and w[3:] == ["appears"]:
            events.append(("appears", c, s, None))
        elif ok and w[0] == "the" and len(w) == 5 and w[3] == "turns" and w[4] in COLOUR_NAMES:
            events.append(("turns", c, s, COLOUR_NAMES.index(w[4])))
        elif ok and w[0] == "the" and len(w) == 5 and w[3] == "moves" and w[4] in DIRECTION_NAMES:
            events.append(("moves", c, s, DIRECTION_NAMES.index(w[4])))
        elif ok and w[0] == "the" and w[3:] == ["leaves"]:
            events.append(("leaves", c, s, None))
        else:
            raise ValueError(f"{part!r} in {paragraph!r} is not an event this world writes")
    return first, events
