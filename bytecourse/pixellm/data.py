"""PixelLM's data: a MUSE-like multi-target reasoning-segmentation set on the Shapes world (arXiv 2312.02228 §4).

MUSE (the paper's data set) pairs an image with a question that involves several objects and needs reasoning, and an
answer that names every target with a rephrased description, each followed by its mask. Here:

- **Images**: 64×64 Shapes canvases with 2–6 objects, colours drawn *with replacement* (so "every red thing" can
  have several targets) and, in half of each training batch, a touching pair (:data:`TOUCHING_WORLD`: two objects
  whose visible masks share a boundary — what the target-refinement loss has to separate).
- **Questions** from a small grammar (:data:`TEMPLATES`) with reasoning over colour, kind, position and size, e.g.
  ``segment the shapes left of the red square`` or ``segment the largest circle and everything of its colour``.
  :func:`parse_question` validates a typed question against it and :func:`targets_of` answers it exactly.
- **Answers**: the targets left to right, each as ``<colour> <kind> <row> <column>`` (the rephrased description: its
  place in the image's 3×3 grid) followed by one **codebook group** ``[SEG0] … [SEG{L·N−1}]`` (the code's
  interleaved form, ``{seg}`` placeholders replaced by the group), joined by ``,`` and ended by ``.``.
  So the number of masks is the number of groups the language model writes.
- **Splits** (held out by seed stream): ``few`` (1–2 targets), ``many`` (3 or more) and ``touching`` (questions
  whose targets include a touching pair) — MUSE's ``test_less`` / ``test_many``, plus the bucket the refinement
  loss is about.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import seeds, text
from ..validation import check_choice, check_int
from ..worlds import ShapesConfig, make_shapes
from ..worlds.shapes import ShapesBatch

IMAGE_SIZE = 64
WORLD = ShapesConfig(
    size=IMAGE_SIZE,
    max_objects=6,
    object_probs=(0.0, 1.0, 1.0, 1.0, 1.0, 1.0),  # 2–6 objects
    radius_range=(0.07, 0.13),
    textured=True,
    caption_length=23,
    repeat_colours=True,
)
TOUCHING_WORLD = ShapesConfig(**{**WORLD.__dict__, "touching": True})

COLOURS = text.COLOUR_NAMES
SHAPES = text.SHAPE_NAMES
PLURALS = tuple(s + "s" for s in SHAPES)
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "centre", "right")
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}  # (axis, sign)
RELATION_MARGIN = 2.0  # pixels: a question is asked only if no object's centre is this close to the referent's
SINGLE_TARGET_REJECT = 0.6  # training draws: a one-target question is redrawn with this probability
SIZE_MARGIN = 0.5  # pixels: "the largest" is asked only if it is larger than the next by this much

#: the grammar: a template's words, with {colour}, {shape}, {shapes} (plural) and {relation} slots
TEMPLATES: dict[str, str] = {
    "colour": "segment every {colour} thing",
    "kind": "segment every {shape}",
    "colour_kind": "segment the {colour} {shapes}",
    "relation": "segment the shapes {relation} the {colour} {shape}",
    "largest": "segment the largest {shape} and everything of its colour",
    "not_colour": "segment everything that is not {colour}",
}

SPECIAL: tuple[str, ...] = ("[PAD]", "[BOS]", "[SEP]", "[EOS]")
MAX_CODEBOOK = 6  # L·N ≤ 6 codebook tokens: [SEG0] … [SEG5] (the released default N = 3, L = 2 fills it)
CODEBOOK: tuple[str, ...] = tuple(f"[SEG{i}]" for i in range(MAX_CODEBOOK))
WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        [w for t in TEMPLATES.values() for w in t.split() if not w.startswith("{")]
        + [w for r in RELATIONS for w in r.split()]
        + [*COLOURS, *SHAPES, *PLURALS, *ROWS, *COLUMNS, ",", "."]
    )
)
VOCAB: tuple[str, ...] = (*SPECIAL, *WORDS, *CODEBOOK)
WORD_TO_ID = {w: i for i, w in enumerate(VOCAB)}
PAD_ID, BOS_ID, SEP_ID, EOS_ID = 0, 1, 2, 3
SEG_IDS: tuple[int, ...] = tuple(WORD_TO_ID[c] for c in CODEBOOK)
SPLITS = ("few", "many", "touching")
MAX_QUESTION = 10
MAX_ANSWER = 6 * (4 + MAX_CODEBOOK + 1) + 1  # six targets, each described, grouped and separated


def codebook_group(tokens_per_group: int) -> list[str]:
    """One target's group: the L·N codebook tokens, scale-major (``[SEG0]…[SEG{N−1}]`` are scale 0's)."""
    check_int("L·N", tokens_per_group, 1, MAX_CODEBOOK)
    return list(CODEBOOK[:tokens_per_group])


@dataclass(frozen=True)
class Scene:
    """One image's objects (visible ones only): colour and kind indices, centre (x, y) and radius in pixels."""

    colours: tuple[int, ...]
    shapes: tuple[int, ...]
    centers: tuple[tuple[float, float], ...]
    radii: tuple[float, ...]
    touching: tuple[int, ...] = ()  # indices of a touching pair, if any

    def __len__(self) -> int:
        return len(self.colours)


def scenes_of(batch: ShapesBatch) -> list[Scene]:
    out = []
    for b in range(len(batch)):
        keep = batch.present[b].nonzero().flatten().tolist()
        pair = ()
        if batch.touching is not None and bool(batch.touching[b]) and 0 in keep and 1 in keep:
            pair = (keep.index(0), keep.index(1))
        out.append(
            Scene(
                tuple(int(batch.colours[b, k]) for k in keep),
                tuple(int(batch.shapes[b, k]) for k in keep),
                tuple((float(batch.centers[b, k, 0]), float(batch.centers[b, k, 1])) for k in keep),
                tuple(float(batch.radii[b, k]) for k in keep),
                pair,
            )
        )
    return out


def describe(scene: Scene, i: int, size: int = IMAGE_SIZE) -> str:
    """Object ``i``'s rephrased name: ``<colour> <kind> <row> <column>`` (its cell of the 3×3 grid)."""
    x, y = scene.centers[i]
    row, col = min(int(3 * y / size), 2), min(int(3 * x / size), 2)
    return f"{COLOURS[scene.colours[i]]} {SHAPES[scene.shapes[i]]} {ROWS[row]} {COLUMNS[col]}"


def parse_question(question: str) -> tuple[str, dict[str, int | str]]:
    """``(template, slots)`` for a question of the grammar (:data:`TEMPLATES`); one clear ``ValueError`` otherwise.
    Slots: ``colour`` / ``shape`` as indices, ``relation`` as its words."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string")
    words = question.strip().lower().split()
    for name, template in TEMPLATES.items():
        slots: dict[str, int | str] = {}
        pattern = template.split()
        i = 0
        ok = True
        for p in pattern:
            if p == "{relation}":
                rel = next((r for r in RELATIONS if words[i : i + len(r.split())] == r.split()), None)
                if rel is None:
                    ok = False
                    break
                slots["relation"] = rel
                i += len(rel.split())
                continue
            if i >= len(words):
                ok = False
                break
            w = words[i]
            if p == "{colour}" and w in COLOURS:
                slots["colour"] = COLOURS.index(w)
            elif p == "{shape}" and w in SHAPES:
                slots["shape"] = SHAPES.index(w)
            elif p == "{shapes}" and w in PLURALS:
                slots["shape"] = PLURALS.index(w)
            elif p != w:
                ok = False
                break
            i += 1
        if ok and i == len(words):
            return name, slots
    examples = "; ".join(
        t.format(colour="red", shape="circle", shapes="circles", relation="left of") for t in TEMPLATES.values()
    )
    raise ValueError(f"question {question!r} is not in the grammar; questions look like: {examples}")


def targets_of(scene: Scene, question: str) -> list[int]:
    """The exact answer: indices of the objects the question asks for (left to right). Raises ``ValueError`` when the
    question does not apply to the scene (a referent that is missing, not unique or too close to call)."""
    name, slots = parse_question(question)
    n = len(scene)
    c, s = slots.get("colour"), slots.get("shape")
    if name == "colour":
        hits = [i for i in range(n) if scene.colours[i] == c]
    elif name == "kind":
        hits = [i for i in range(n) if scene.shapes[i] == s]
    elif name == "colour_kind":
        hits = [i for i in range(n) if scene.colours[i] == c and scene.shapes[i] == s]
    elif name == "not_colour":
        hits = [i for i in range(n) if scene.colours[i] != c]
    elif name == "relation":
        refs = [i for i in range(n) if scene.colours[i] == c and scene.shapes[i] == s]
        if len(refs) != 1:
            raise ValueError(f"{question!r}: the referent must be unique in the image, found {len(refs)}")
        axis, sign = RELATIONS[str(slots["relation"])]
        ref = scene.centers[refs[0]][axis]
        others = [i for i in range(n) if i != refs[0]]
        if any(abs(scene.centers[i][axis] - ref) < RELATION_MARGIN for i in others):
            raise ValueError(f"{question!r}: an object stands too close to the referent's line to call")
        hits = [i for i in others if sign * (scene.centers[i][axis] - ref) > 0]
    else:  # largest
        kind = [i for i in range(n) if scene.shapes[i] == s]
        if not kind:
            raise ValueError(f"{question!r}: no {SHAPES[s]} in the image")
        ranked = sorted(kind, key=lambda i: -scene.radii[i])
        if len(ranked) > 1 and scene.radii[ranked[0]] - scene.radii[ranked[1]] < SIZE_MARGIN:
            raise ValueError(f"{question!r}: the largest {SHAPES[s]} is too close in size to call")
        top = ranked[0]
        hits = [i for i in range(n) if i == top or scene.colours[i] == scene.colours[top]]
    return sorted(hits, key=lambda i: scene.centers[i])


def answer_text(scene: Scene, targets: list[int], tokens_per_group: int | None) -> str:
    """The answer: each target's description, followed by its codebook group (``tokens_per_group`` = L·N; ``None``:
    the text-only answer of the language-model stage), joined by ``,`` and ended by ``.`` (only ``.`` if none)."""
    group = [] if tokens_per_group is None else codebook_group(tokens_per_group)
    parts = [" ".join([describe(scene, i), *group]) for i in targets]
    return " , ".join(parts) + " ." if parts else "."


def parse_answer(answer: str) -> list[tuple[int, int]]:
    """``[(colour, kind), …]`` of the described targets, in order (codebook tokens and positions ignored)."""
    words = [w for w in answer.split() if w not in CODEBOOK]
    return [(COLOURS.index(a), SHAPES.index(b)) for a, b in zip(words, words[1:]) if a in COLOURS and b in SHAPES]


def sample_question(scene: Scene, g: torch.Generator, split: str | None = None) -> tuple[str, list[int]] | None:
    """A question of the grammar that applies to ``scene`` and has ≥ 1 target (and, for a split, fits it): slots
    drawn from the scene's own objects so that most draws apply; ``None`` after 40 failed draws."""
    names = list(TEMPLATES)
    for _ in range(40):
        name = names[int(torch.randint(len(names), (1,), generator=g))]
        i = int(torch.randint(len(scene), (1,), generator=g))
        rel = list(RELATIONS)[int(torch.randint(len(RELATIONS), (1,), generator=g))]
        colour = scene.colours[i]
        if name == "not_colour" and torch.rand(1, generator=g) < 0.5:
            colour = int(torch.randint(len(COLOURS), (1,), generator=g))
        q = TEMPLATES[name].format(
            colour=COLOURS[colour], shape=SHAPES[scene.shapes[i]], shapes=PLURALS[scene.shapes[i]], relation=rel
        )
        try:
            hits = targets_of(scene, q)
        except ValueError:
            continue
        if not hits or (split is not None and not fits_split(scene, hits, split)):
            continue
        if split is None and len(hits) == 1 and torch.rand(1, generator=g) < SINGLE_TARGET_REJECT:
            continue  # training questions lean to several targets, as MUSE's (≥ 2 each)
        return q, hits
    return None


def fits_split(scene: Scene, targets: list[int], split: str) -> bool:
    check_choice("split", split, SPLITS)
    if split == "few":
        return 1 <= len(targets) <= 2
    if split == "many":
        return len(targets) >= 3
    return bool(scene.touching) and all(i in targets for i in scene.touching)


@dataclass
class MuseBatch:
    """Images, questions, exact answers and masks. ``masks[b]`` is ``(n_b, H, W)`` bool in answer order;
    ``descriptions[b]`` the targets' ``(colour, kind)``."""

    images: torch.Tensor
    questions: list[str]
    answers: list[str]
    text_answers: list[str]
    masks: list[torch.Tensor]
    descriptions: list[list[tuple[int, int]]]
    scenes: list[Scene]

    def __len__(self) -> int:
        return self.images.shape[0]


def make_muse(
    n: int, seed: int, tokens_per_group: int, *, split: str | None = None, touching_share: float = 0.5
) -> MuseBatch:
    """``n`` seeded question–answer pairs (one per image; images where no question fits are skipped and redrawn).
    ``touching_share`` of the images come from :data:`TOUCHING_WORLD` (``split="touching"``: all of them)."""
    n = check_int("n", n, 1)
    if split is not None:
        check_choice("split", split, SPLITS)
    g = torch.Generator().manual_seed(seed)
    images, questions, answers, text_answers, masks, descr, scenes = [], [], [], [], [], [], []
    chunk = 0
    while len(questions) < n:
        share = 1.0 if split == "touching" else touching_share
        k = max(8, n)
        n_touch = round(share * k)
        parts = []  # each chunk's images from a 62-bit seed drawn from the stream's generator
        for count, world in ((k - n_touch, WORLD), (n_touch, TOUCHING_WORLD)):
            world_seed = int(torch.randint(2**62, (1,), generator=g))
            if count:
                parts.append(make_shapes(count, world_seed, world))
        chunk += 1
        for batch in parts:
            for b, scene in enumerate(scenes_of(batch)):
                if len(questions) >= n:
                    break
                got = sample_question(scene, g, split)
                if got is None:
                    continue
                q, hits = got
                keep = batch.present[b].nonzero().flatten()
                vis = batch.instance_masks[b, keep]
                images.append(batch.images[b])
                questions.append(q)
                answers.append(answer_text(scene, hits, tokens_per_group))
                text_answers.append(answer_text(scene, hits, None))
                masks.append(vis[hits])
                descr.append([(scene.colours[i], scene.shapes[i]) for i in hits])
                scenes.append(scene)
        if chunk > 50 * (n // 8 + 1):
            raise RuntimeError(f"could not draw {n} questions for split {split!r}")
    return MuseBatch(torch.stack(images), questions, answers, text_answers, masks, descr, scenes)


def training_batch(n: int, seed: int, step: int, tokens_per_group: int, stream: int = seeds.PIXELLM_DATA) -> MuseBatch:
    """Training step ``step``'s batch for training seed ``seed`` (the same images and questions for every arm;
    ``stream``: another stage's seed stream, e.g. ``seeds.PIXELLM_LM``)."""
    return make_muse(n, stream + seed * 100_000 + step, tokens_per_group)


def held_out(split: str, n: int, tokens_per_group: int, eval_seed: int = 0) -> MuseBatch:
    """An evaluation split (its own seed stream, disjoint from training)."""
    check_choice("split", split, SPLITS)
    offset = 1_000 * eval_seed + SPLITS.index(split) * 100
    return make_muse(n, seeds.PIXELLM_EVAL + offset, tokens_per_group, split=split)


def tokenize(questions: list[str], answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[BOS] question [SEP] answer [EOS]``, right-padded: ids ``(B, T)`` and the answer mask (the positions whose
    token the language model is trained to predict: the answer and its ``[EOS]``)."""
    if not questions or len(questions) != len(answers):
        raise ValueError(f"need as many answers as questions (≥ 1), got {len(questions)} and {len(answers)}")
    rows = []
    for q, a in zip(questions, answers):
        qw, aw = q.split(), a.split()
        bad = [w for w in qw + aw if w not in WORD_TO_ID]
        if bad:
            raise ValueError(f"words {bad} are not in PixelLM's vocabulary")
        rows.append(([BOS_ID, *(WORD_TO_ID[w] for w in qw), SEP_ID], [*(WORD_TO_ID[w] for w in aw), EOS_ID]))
    length = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
    target = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, (p, a) in enumerate(rows):
        ids[i, : len(p) + len(a)] = torch.tensor(p + a)
        target[i, len(p) : len(p) + len(a)] = True
    return ids, target


def prompt_ids(questions: list[str]) -> list[list[int]]:
    """``[BOS] question [SEP]`` for generation (each validated against the grammar)."""
    for q in questions:
        parse_question(q)
    return [[BOS_ID, *(WORD_TO_ID[w] for w in q.strip().lower().split()), SEP_ID] for q in questions]


def detokenize(ids: list[int]) -> str:
    words = []
    for t in ids:
        if t == EOS_ID:
            break
        if t >= len(SPECIAL):
            words.append(VOCAB[t])
    return " ".join(words)


def contrastive_captions(batch: ShapesBatch) -> list[str]:
    """Stage 1's captions: every object described (colour, kind, cell), left to right — the image encoder learns
    what and where, as CLIP's captions teach it."""
    out = []
    for scene in scenes_of(batch):
        order = sorted(range(len(scene)), key=lambda i: scene.centers[i])
        out.append(" , ".join(describe(scene, i) for i in order))
    return out


def region_phrases() -> list[str]:
    """Stage 1's region phrases: every ``<colour> <kind>``, class ``colour · len(SHAPES) + kind``."""
    return [f"{c} {k}" for c in COLOURS for k in SHAPES]


def region_labels(batch: ShapesBatch) -> torch.Tensor:
    """``(B, K)`` each object's index into :func:`region_phrases` (absent slots have empty masks and are skipped)."""
    return batch.colours * len(SHAPES) + batch.shapes


def hard_negative_captions(batch: ShapesBatch, g: torch.Generator) -> list[str]:
    """Per image, its caption with one object's *kind* changed, then one with one object's *colour* changed
    (NegCLIP's swapped-attribute negatives): ``2·B`` captions, image b's at ``2b`` and ``2b + 1``."""
    out = []
    for scene in scenes_of(batch):
        order = sorted(range(len(scene)), key=lambda i: scene.centers[i])
        for field, names in (("shapes", SHAPES), ("colours", COLOURS)):
            values = list(getattr(scene, field))
            k = int(torch.randint(len(values), (1,), generator=g))
            values[k] = (values[k] + 1 + int(torch.randint(len(names) - 1, (1,), generator=g))) % len(names)
            changed = Scene(**{**scene.__dict__, field: tuple(values)})
            out.append(" , ".join(describe(changed, i) for i in order))
    return out
