"""COSA's data: the vocabulary, the pretraining stream of single Shapes images with captions, **concatenation**
(the paper's one idea, §3.1), and the Events clips the regimes are evaluated (and fine-tuned) on.

Concatenation, as ``COSA.process_batch_concatenated`` does it: for each sample *i* of the batch, K − 1 other
samples are drawn uniformly without replacement from the whole batch; their frames are put after sample *i*'s in
that order (raw pixels, re-encoded frame by frame) and their captions are joined with spaces in the same order.
So a batch of B single images becomes B pseudo-videos of K frames with B "paragraphs", without one real video.
"similar" sampling (the paper's Table 9 control) draws the K − 1 others among the samples that share the anchor's
colour or shape instead, topping up at random when too few do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import seeds, text
from ..validation import check_choice, check_int
from ..worlds import ShapesConfig, make_shapes
from ..worlds.events import EventsConfig, make_events

SPECIAL: tuple[str, ...] = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")
VOCAB: tuple[str, ...] = (*SPECIAL, *[w for w in text.VOCAB if w != text.PAD], *text.EVENT_WORDS)
WORD_TO_ID = {w: i for i, w in enumerate(VOCAB)}
PAD_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3
FIRST_WORD_ID = len(SPECIAL)
SAMPLING = ("random", "similar")


def tokenize(texts: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[CLS] w₁ … wₙ [SEP]`` right-padded to ``length``: ids and attention mask, each ``(B, length)``."""
    if not texts:
        raise ValueError("tokenize needs at least one caption, got an empty list")
    ids = torch.full((len(texts), length), PAD_ID, dtype=torch.long)
    for i, caption in enumerate(texts):
        words = caption.split()
        if not words:
            raise ValueError(f"caption {i} is empty")
        if len(words) + 2 > length:
            raise ValueError(f"caption {caption!r} has {len(words)} words; at most {length - 2} fit")
        bad = [w for w in words if w not in WORD_TO_ID]
        if bad:
            raise ValueError(f"words {bad} of caption {caption!r} are not in COSA's vocabulary")
        ids[i, : len(words) + 2] = torch.tensor([CLS_ID, *(WORD_TO_ID[w] for w in words), SEP_ID])
    return ids, ids != PAD_ID


def detokenize(ids: torch.Tensor) -> list[str]:
    """Words between ``[CLS]`` and the first ``[SEP]`` (special tokens dropped)."""
    out = []
    for row in ids.tolist():
        words = []
        for t in row[1:] if row and row[0] == CLS_ID else row:
            if t == SEP_ID:
                break
            if t >= FIRST_WORD_ID:
                words.append(VOCAB[t])
        out.append(" ".join(words))
    return out


@dataclass
class Samples:
    """A batch of (pseudo-)videos and their texts: frames ``(B, F, 3, H, W)``, ``texts`` (B strings) and, for a
    concatenation, ``members (B, K)``: which single samples it is made of, in frame order."""

    frames: torch.Tensor
    texts: list[str]
    members: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.frames.shape[0]


def partners(
    k: int, batch: int, generator: torch.Generator, sampling: str = "random", keys: torch.Tensor | None = None
) -> torch.Tensor:
    """``(B, K)`` member indices: row *i* is ``i`` followed by K − 1 distinct others from the batch — uniform
    (``"random"``, the paper's default) or, for ``"similar"``, first among the rows whose ``keys (B, 2)``
    (colour, shape) share a value with row *i*'s, then uniform over the rest."""
    check_int("K", k, 1)
    check_int("batch", batch, 1)
    check_choice("sampling", sampling, SAMPLING)
    if k > batch:
        raise ValueError(f"K={k} samples per concatenation need a batch of at least K, got {batch}")
    score = torch.rand(batch, batch, generator=generator)  # a random order of the others for every anchor
    if sampling == "similar":
        if keys is None:
            raise ValueError("similar sampling needs keys (B, 2): each sample's colour and shape")
        similar = (keys[:, None, :] == keys[None, :, :]).any(-1)
        score = score + similar.float()  # similar ones first, each group in random order
    score.fill_diagonal_(-1.0)  # never the anchor itself
    others = score.topk(k - 1, dim=1).indices if k > 1 else torch.zeros(batch, 0, dtype=torch.long)
    return torch.cat([torch.arange(batch)[:, None], others], dim=1)


def concatenate(samples: Samples, members: torch.Tensor) -> Samples:
    """The concatenated batch: frames of ``members[i]`` one after another (``(B, K·n, 3, H, W)``) and their texts
    joined with spaces in the same order."""
    b, f = samples.frames.shape[:2]
    frames = samples.frames[members].flatten(1, 2)  # (B, K, n, ...) → (B, K·n, ...)
    texts = [" ".join(samples.texts[j] for j in row) for row in members.tolist()]
    return Samples(frames, texts, members)


def pretraining_batch(batch: int, seed: int, step: int, size: int = 32) -> tuple[Samples, torch.Tensor]:
    """Single Shapes images with their captions (n = 1 frame each) and each image's (colour, shape) keys of its
    first object — the stream every regime draws the same batches from."""
    world = make_shapes(batch, seeds.COSA_DATA + seed * 100_000 + step, ShapesConfig(size=size))
    keys = torch.stack([world.colours[:, 0], world.shapes[:, 0]], dim=1)
    return Samples(world.images[:, None], world.captions), keys


def events_samples(batch: int, seed: int, frames: int = 6) -> tuple[Samples, list]:
    """Events clips as samples: ``(B, T, 3, H, W)`` frames with their paragraphs; and the clips' events."""
    clips = make_events(batch, seed, EventsConfig(frames=frames))
    return Samples(clips.videos, clips.paragraphs), clips.events
