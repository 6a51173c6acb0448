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
    "moves", "bounces", "curves", "enters", "leaves", "from", "to", "the",
    "left", "right", "up", "down", "top", "bottom",
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
