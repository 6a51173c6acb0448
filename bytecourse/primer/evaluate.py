"""Chapter 00's evaluation: ``python -m bytecourse eval primer`` and the notebook's live slice.

Protocol: for each setting (number of objects, sampler, DDIM steps, guidance scale) and each evaluation seed, sample
64 images from seeded noise for that seed's held-out captions and read them back with the exact oracle (colour,
shape, exact-set accuracy, realism). The world's own images for the same captions give the ceiling.
"""

from __future__ import annotations

from ..diffusion.image_model import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_STEPS,
    EVAL_SEED_OFFSET,
    eval_captions,
    load_image_model,
    measure,
    sample_captions,
)
from ..diffusion.unet import ImageDenoiser
from ..evaluation import summarise
from ..worlds import ShapesConfig, make_shapes

EVAL_SAMPLES = 64
STEP_GRID = (5, 10, 20, 50)
GUIDANCE_GRID = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)
METRICS = ("colour", "shape", "exact", "realism")
SLICE_TOLERANCE = 0.05  # same code and seed; only float rounding across CPUs/GPUs can move a sample across a verdict
# the notebook's slice: both ends of each table
SLICE_ROWS = ("DDIM 5 steps", "DDIM 20 steps", "CFG 1", "CFG 3", "CFG 8")


def eval_rows(
    model: ImageDenoiser, settings: list[dict], seeds: list[int], n: int = EVAL_SAMPLES, progress: bool = True
) -> dict:
    """A table: for each setting (``name``, ``num_objects``, ``steps``, ``guidance_scale``, ``sampler``) and seed,
    sample ``n`` images for that seed's captions and measure them."""
    from tqdm.auto import tqdm

    results: dict[str, list] = {}
    for s, seed in tqdm([(s, seed) for s in settings for seed in seeds], disable=not progress, desc="eval"):
        caps = eval_captions(seed, s["num_objects"], n, model.config.image_size)
        imgs = sample_captions(
            model,
            caps,
            steps=s["steps"],
            guidance_scale=s["guidance_scale"],
            seed=EVAL_SEED_OFFSET + seed,
            sampler=s["sampler"],
        )
        results.setdefault(s["name"], []).append(measure(imgs, caps))
    rows = [{"setting": s["name"], "config": s, "metrics": summarise(results[s["name"]])} for s in settings]
    return {"rows": rows, "seeds": list(seeds), "samples_per_seed": n}


def steps_settings(include_ddpm: bool = True, guidance_scale: float = DEFAULT_GUIDANCE_SCALE) -> list[dict]:
    rows = [
        dict(name=f"DDIM {k} steps", num_objects=1, steps=k, guidance_scale=guidance_scale, sampler="ddim")
        for k in STEP_GRID
    ]
    if include_ddpm:
        rows.append(
            dict(name="DDPM 1000 steps", num_objects=1, steps=1000, guidance_scale=guidance_scale, sampler="ddpm")
        )
    return rows


def guidance_settings() -> list[dict]:
    return [
        dict(name=f"CFG {w:g}", num_objects=1, steps=DEFAULT_STEPS, guidance_scale=w, sampler="ddim")
        for w in GUIDANCE_GRID
    ]


def objects_settings() -> list[dict]:
    return [
        dict(
            name=f"{k} object(s)",
            num_objects=k,
            steps=DEFAULT_STEPS,
            guidance_scale=DEFAULT_GUIDANCE_SCALE,
            sampler="ddim",
        )
        for k in (1, 2, 3)
    ]


def evaluate_primer(model: ImageDenoiser, seeds: list[int], progress: bool = True) -> dict:
    """The chapter's full tables (what ``python -m bytecourse eval primer`` stores in the manifest)."""
    w, k = DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS
    return {
        "steps": {
            **eval_rows(model, steps_settings(), seeds, progress=progress),
            "setting_name": f"sampler (1 object, CFG {w:g})",
        },
        "steps_unguided": {
            **eval_rows(model, steps_settings(include_ddpm=False, guidance_scale=1.0), seeds, progress=progress),
            "setting_name": "sampler (1 object, CFG 1: no guidance)",
        },
        "cfg": {
            **eval_rows(model, guidance_settings(), seeds, progress=progress),
            "setting_name": f"CFG scale (1 object, DDIM {k})",
        },
        "objects": {
            **eval_rows(model, objects_settings(), seeds, progress=progress),
            "setting_name": f"caption (DDIM {k}, CFG {w:g})",
        },
        "world": {"oracle_on_world_images": world_sanity(seeds)},
    }


def world_sanity(seeds: list[int], n: int = EVAL_SAMPLES) -> dict:
    """The oracle on the world's own images for the same captions — the ceiling every row is read against."""
    per_seed = []
    for seed in seeds:
        batch = make_shapes(n, EVAL_SEED_OFFSET + seed, ShapesConfig(), num_objects=1)
        per_seed.append(measure(batch.images, batch.captions))
    return summarise(per_seed)


def live_slice(model: ImageDenoiser, rows: tuple[str, ...] | None = SLICE_ROWS) -> dict[str, dict]:
    """Evaluation seed 0 of the sampler and guidance tables, recomputed (``rows``: only the settings so named,
    :data:`SLICE_ROWS` by default; None: every DDIM row of both). Checked against the stored tables with
    :func:`bytecourse.evaluation.check_slice` at :data:`SLICE_TOLERANCE`."""

    def keep(settings):
        return [s for s in settings if rows is None or s["name"] in rows]

    out = {
        "steps": eval_rows(model, keep(steps_settings(include_ddpm=False)), [0], progress=False),
        "cfg": eval_rows(model, keep(guidance_settings()), [0], progress=False),
    }
    return {k: v for k, v in out.items() if v["rows"]}


def cli_eval(options) -> dict:
    from ..device import default_device

    model, _ = load_image_model(default_device(options.device))
    return evaluate_primer(model, list(options.seeds))
