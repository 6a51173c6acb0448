"""Chapter 01's experiments: the tables of ``python -m bytecourse eval sag``, the live slice and the widget.

Tasks (both on the primer's caption-conditioned Shapes model, one-object captions, DDIM 20, CFG 2):

- **style** (SAG's own task, §4.1): guide towards the Gram statistics of one reference image (a textured world
  image; the primer model only ever saw plain backgrounds). Measured: the style (Gram) loss of the final
  sample — the paper's "style score" — and whether the oracle still finds the caption's object (our stand-in
  for the paper's CLIP score), plus realism.
- **position**: "put the object in the left third", the frozen clean-image classifier's energy. Measured: the
  oracle's hit rate (the object's centroid in the left third), content and realism.

SAG has no checkpoint of its own (it is training-free): its tables live under ``manifest["tables"]["sag"]``.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from .. import text
from ..diffusion import initial_noise, make_ddim_scheduler, make_train_scheduler, to_image_space
from ..diffusion.classifier import get_classifier
from ..diffusion.losses import AttributeLoss, GramStyleLoss
from ..diffusion.memory import SavedTensorMeter, tensor_bytes
from ..diffusion.ode import VPLevels, autograd_grad, solve, symplectic_adjoint_grad
from ..diffusion.primer import DEFAULT_CFG, EVAL_SEED_OFFSET, eval_captions
from ..evaluation import summarise
from ..worlds import ShapesConfig, make_shapes
from .estimate import clean_estimate_grid
from .guided import GuidanceConfig, freedom, guided_sample, sag, unguided_sample, universal_guidance

CHECKPOINT = None  # training-free: no weights of its own
TABLE_KEY = "sag"
STEPS = 20
SAMPLES = 24
STYLE_REFERENCE_SEED = 5  # a textured world image ("a cyan square"); fixed so every table uses the same reference
N_GRID = (1, 2, 4, 8)
EARLY_WINDOW = (0.1, 0.6)


# ----------------------------------------------------------------------------------------------------- tasks


def style_reference() -> tuple[torch.Tensor, str]:
    b = make_shapes(1, STYLE_REFERENCE_SEED, ShapesConfig(textured=True), num_objects=1)
    return b.images[0], b.captions[0]


def make_loss(task: str, classifier=None):
    """The guidance loss of a task (per-sample, on x̂₀ in model space)."""
    if task == "style":
        ref, _ = style_reference()
        return GramStyleLoss(ref * 2 - 1)
    if task == "position":
        clf = classifier if classifier is not None else get_classifier()[0]
        return AttributeLoss(clf, "position", "left")
    raise ValueError(f"task must be 'style' or 'position', got {task!r}")


def oracle_measures(images: torch.Tensor, captions: list[str]) -> dict[str, float]:
    """Content (caption's object found, exact), realism and the position hit rate (centroid in the left third)."""
    from ..oracle import caption_accuracy, detect_objects, realism

    dets = detect_objects(images)
    acc = caption_accuracy(captions, dets)
    hits = [any(o.well_formed and o.centroid[0] < 1 / 3 for o in d) for d in dets]
    return {"content": acc["exact"], "realism": float(realism(images).mean()), "left_hit": sum(hits) / len(hits)}


def method_rows() -> list[tuple[str, GuidanceConfig | None]]:
    rows: list[tuple[str, GuidanceConfig | None]] = [("unguided", None), ("FreeDoM (= SAG n=1)", freedom())]
    rows += [(f"SAG n={n}", sag(n)) for n in N_GRID[1:]]
    rows += [("Universal Guidance", universal_guidance()),
             ("SAG n=4, plain autograd", sag(4, gradient="autograd")),
             (f"FreeDoM, window {EARLY_WINDOW}", freedom(window=EARLY_WINDOW)),
             (f"SAG n=4, window {EARLY_WINDOW}", sag(4, window=EARLY_WINDOW))]
    return rows


def run_setting(model, task: str, config: GuidanceConfig | None, seed: int, n: int = SAMPLES, loss_fn=None) -> dict[str, float]:
    """One table cell: ``n`` samples of seed ``seed``'s captions under one guidance setting."""
    loss_fn = loss_fn if loss_fn is not None else make_loss(task)
    caps = eval_captions(seed, 1, n, model.config.image_size)
    tokens = text.encode(caps, model.config.caption_length)
    noise = initial_noise((n, model.config.channels, model.config.image_size, model.config.image_size), EVAL_SEED_OFFSET + seed)
    sched = make_train_scheduler()
    if config is None:
        r = unguided_sample(model, noise, tokens, sched, loss_fn, steps=STEPS, cfg_scale=DEFAULT_CFG, seed=seed)
    else:
        r = guided_sample(model, noise, tokens, sched, loss_fn, config, steps=STEPS, cfg_scale=DEFAULT_CFG, seed=seed)
    out = {"loss": float(r.loss.mean()), **oracle_measures(to_image_space(r.x0), caps), "nfe": r.nfe, "vjp": r.vjp,
           "seconds_per_sample": r.seconds / n}
    return out


def guidance_table(model, task: str, seeds: list[int], rows=None, n: int = SAMPLES, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    loss_fn = make_loss(task)
    rows = method_rows() if rows is None else rows
    out = []
    for name, cfg in tqdm(rows, disable=not progress, desc=f"guidance ({task})"):
        per_seed = [run_setting(model, task, cfg, s, n, loss_fn) for s in seeds]
        out.append({"setting": name, "config": None if cfg is None else cfg.to_dict(), "metrics": summarise(per_seed)})
    return {"rows": out, "seeds": list(seeds), "samples_per_seed": n, "setting_name": f"method ({task})"}


# ------------------------------------------------------------------------------ exactness, memory, estimates


def _eps_fn(model, tokens, cfg_scale=DEFAULT_CFG):
    from ..diffusion import guided_eps

    return lambda x, t: guided_eps(model, x, t, tokens, cfg_scale)


def exactness_and_memory(model, ns=(1, 2, 4, 8, 16), index: int = 2, batch: int = 1) -> dict:
    """For the real UNet: relative error of the symplectic adjoint against autograd through the same n-step map
    (float64 and float32), and the peak bytes held for the backward pass (states + live saved tensors)."""
    import copy

    ts = make_ddim_scheduler(make_train_scheduler(), STEPS).timesteps.tolist()
    levels = VPLevels(make_train_scheduler().alphas_cumprod)
    caps = eval_captions(0, 1, batch, model.config.image_size)
    tokens = text.encode(caps, model.config.caption_length)
    ref, _ = style_reference()
    loss32 = GramStyleLoss(ref * 2 - 1)
    model64 = copy.deepcopy(model).double()
    loss64 = copy.deepcopy(loss32).double()
    rows = []
    for n in ns:
        grid = clean_estimate_grid(ts, index, n)
        row = {"n": n, "steps": len(grid) - 1}
        for dtype, m, lf in ((torch.float64, model64, loss64), (torch.float32, model, loss32)):
            x = initial_noise((batch, 3, model.config.image_size, model.config.image_size), 7).to(dtype)
            eps = _eps_fn(m, tokens)
            total = lambda z, lf=lf: lf(z).sum()  # noqa: E731
            _, ga, _, _ = symplectic_adjoint_grad(eps, x, grid, levels, total, "data")
            _, gb, _, _ = autograd_grad(eps, x, grid, levels, total, "data")
            row["rel_err_float64" if dtype == torch.float64 else "rel_err_float32"] = float((ga - gb).norm() / gb.norm())
        x = initial_noise((batch, 3, model.config.image_size, model.config.image_size), 7)
        eps = _eps_fn(model, tokens)
        total = lambda z: loss32(z).sum()  # noqa: E731
        params = list(model.parameters())
        with SavedTensorMeter(exclude=params) as meter:
            meter.hold(tensor_bytes(x) * len(grid))  # the adjoint keeps every state of the forward solve
            symplectic_adjoint_grad(eps, x, grid, levels, total, "data")
        with SavedTensorMeter(exclude=params) as auto:
            xg = x.clone().requires_grad_(True)
            with torch.enable_grad():
                out = total(solve(eps, xg, grid, levels, "data"))
                torch.autograd.grad(out, xg)
        row |= {"adjoint_peak_bytes": meter.peak_bytes, "autograd_peak_bytes": auto.peak_bytes,
                "ratio": auto.peak_bytes / meter.peak_bytes}
        rows.append(row)
    return {"rows": rows, "index": index, "t": ts[index], "batch": batch,
            "parameter_bytes": tensor_bytes(*model.parameters()),
            "note": "peak bytes held for the backward pass: stored states (counted explicitly) + saved tensors of live graphs "
                    "(the network's parameters are not counted: they are in memory with or without a backward pass)"}


def estimate_accuracy(model, seeds: list[int], indices=(2, 6, 10, 14), ns=N_GRID, batch: int = 8, fine_stride: int = 10,
                      progress: bool = True) -> dict:
    """‖x̂₀⁽ⁿ⁾(x_t) − x₀^fine(x_t)‖ (rms per pixel) and the cosine between the n-step and the fine-solve guidance
    gradients (style loss), for x_t = α_t x₀ + σ_t ε of world images, against the sampler index and n."""
    from tqdm.auto import tqdm

    sched = make_train_scheduler()
    levels = VPLevels(sched.alphas_cumprod)
    ts = make_ddim_scheduler(sched, STEPS).timesteps.tolist()
    loss_fn = make_loss("style")
    total = lambda z: loss_fn(z).sum()  # noqa: E731
    per: dict[tuple[int, int], list[dict]] = {}
    for seed in tqdm(seeds, disable=not progress, desc="estimate accuracy"):
        world = make_shapes(batch, EVAL_SEED_OFFSET + 500 + seed, ShapesConfig(size=model.config.image_size), num_objects=1)
        x0 = world.images * 2 - 1
        eps = _eps_fn(model, world.tokens)
        for i in indices:
            g = torch.Generator().manual_seed(1000 * seed + i)  # per level, so any subset of levels recomputes the same x_t
            t = ts[i]
            a = sched.alphas_cumprod[t]
            xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=g)
            fine = [t, *range(t - fine_stride, -1, -fine_stride), -1]
            _, g_ref, _, x_ref = symplectic_adjoint_grad(eps, xt, fine, levels, total, "data")
            for n in ns:
                _, g_n, _, x_n = symplectic_adjoint_grad(eps, xt, clean_estimate_grid(ts, i, n), levels, total, "data")
                per.setdefault((i, n), []).append({
                    "rms_error": float((x_n - x_ref).flatten(1).pow(2).mean(1).sqrt().mean()),
                    "grad_cosine": float(torch.nn.functional.cosine_similarity(g_n.flatten(1), g_ref.flatten(1)).mean()),
                })
    rows = [{"setting": f"t={ts[i]} (step {i}), n={n}", "index": i, "t": ts[i], "n": n, "metrics": summarise(per[(i, n)])}
            for i in indices for n in ns]
    return {"rows": rows, "seeds": list(seeds), "samples_per_seed": batch, "setting_name": "level, n",
            "fine_solve": f"Euler (DDIM) every {fine_stride} training timesteps from t to 0"}


def evaluate_sag(model, seeds: list[int], progress: bool = True) -> dict:
    t0 = time.time()
    tables = {
        "exactness_memory": exactness_and_memory(model),
        "estimate": estimate_accuracy(model, seeds, progress=progress),
        "style": guidance_table(model, "style", seeds, progress=progress),
        "position": guidance_table(model, "position", seeds, progress=progress),
    }
    tables["wall_time_s"] = round(time.time() - t0, 1)
    return tables


def cli_train(args) -> dict:
    raise SystemExit("SAG is training-free: nothing to train (its classifier: `python -m bytecourse train classifier`)")


def cli_eval(args) -> dict:
    from ..device import default_device
    from ..diffusion.primer import load_primer_model

    model, _ = load_primer_model(default_device(args.device))
    return evaluate_sag(model, list(args.seeds))


def stored_tables() -> dict | None:
    from .. import checkpoints

    entry = checkpoints.read_manifest().get("tables", {}).get(TABLE_KEY)
    return None if entry is None else entry["tables"]


# -------------------------------------------------------------------------------------------------- widget


def guide_preview(model, strength: float, n: int, window: tuple[float, float], task: str = "style", caption: str = "a red circle",
                  seed: int = 0, samples: int = 4, classifier=None) -> dict:
    """Pure function behind the widget: unguided and guided samples from the same noise, with the guidance loss,
    the oracle's verdicts and the network evaluations."""
    if samples < 1:
        raise ValueError(f"samples must be ≥ 1, got {samples}")
    loss_fn = make_loss(task, classifier)
    caps = [caption] * samples
    tokens = text.encode(caps, model.config.caption_length)
    noise = initial_noise((samples, 3, model.config.image_size, model.config.image_size), seed)
    sched = make_train_scheduler()
    base = unguided_sample(model, noise, tokens, sched, loss_fn, steps=STEPS, cfg_scale=DEFAULT_CFG, seed=seed)
    cfg = replace(sag(int(n)), strength=float(strength), window=(float(window[0]), float(window[1])))
    r = guided_sample(model, noise, tokens, sched, loss_fn, cfg, steps=STEPS, cfg_scale=DEFAULT_CFG, seed=seed)
    imgs_b, imgs_g = to_image_space(base.x0), to_image_space(r.x0)
    return {"task": task, "caption": caption, "strength": strength, "n": int(n), "window": tuple(window),
            "unguided": {"images": imgs_b, "loss": base.loss, **oracle_measures(imgs_b, caps), "nfe": base.nfe},
            "guided": {"images": imgs_g, "loss": r.loss, **oracle_measures(imgs_g, caps), "nfe": r.nfe, "vjp": r.vjp,
                       "seconds": r.seconds}, "trace": r.trace}


def render_preview(result: dict) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display

    from ..viz import image_grid

    u, g = result["unguided"], result["guided"]
    lo, hi = result["window"]
    print(f"{result['task']} guidance · strength {result['strength']:g} · n={result['n']} · window {lo:.2f}–{hi:.2f} → "
          f"loss {float(u['loss'].mean()):.3f} → {float(g['loss'].mean()):.3f}, realism {u['realism']:.3f} → {g['realism']:.3f}, "
          f"content {u['content']:.2f} → {g['content']:.2f}, left {u['left_hit']:.2f} → {g['left_hit']:.2f}, "
          f"network evaluations {u['nfe']:.0f} → {g['nfe']:.0f} (+{g['vjp']:.0f} VJPs)")
    images = torch.cat([u["images"], g["images"]])
    titles = [f"unguided {v:.2f}" for v in u["loss"].tolist()] + [f"guided {v:.2f}" for v in g["loss"].tolist()]
    target = ("towards the Gram statistics of “" + style_reference()[1] + "” on a textured background" if result["task"] == "style"
              else "object towards the left third")
    fig = image_grid(images, titles, ncols=len(u["images"]),
                     suptitle=f"“{result['caption']}”, {target}: top unguided, bottom guided (loss per sample)")
    display(fig)
    plt.close(fig)


def sag_explorer(model, samples: int = 4, classifier=None):
    """The main widget of chapter 01."""
    import ipywidgets as W

    from ..widgets import FunctionView

    clf = classifier if classifier is not None else get_classifier()[0]
    controls = {
        "task": W.Dropdown(options=["style", "position"], value="style", description="task"),
        "strength": W.FloatSlider(value=1.0, min=0.0, max=4.0, step=0.25, description="strength", continuous_update=False),
        "n": W.SelectionSlider(options=[1, 2, 4, 8], value=4, description="n (NFE/x̂₀)", continuous_update=False),
        "window": W.FloatRangeSlider(value=(0.3, 0.7), min=0.0, max=1.0, step=0.05, description="guided steps", continuous_update=False),
        "seed": W.IntSlider(value=0, min=0, max=20, description="seed", continuous_update=False),
    }
    return FunctionView(controls, lambda **v: guide_preview(model, samples=samples, classifier=clf, **v), render_preview,
                        title="Training-free guidance: the n-step estimate")
