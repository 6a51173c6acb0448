from dataclasses import replace

import pytest
import torch

from bytecourse import text
from bytecourse.diffusion import ImageDenoiser, UNetConfig, ddim_sample, make_ddim_scheduler, make_train_scheduler
from bytecourse.diffusion.ode import VPLevels, solve
from bytecourse.sag import (
    GuidanceConfig,
    clean_estimate,
    clean_estimate_grid,
    freedom,
    guided_indices,
    guided_sample,
    sag,
    unguided_sample,
    universal_guidance,
)

from .test_ode import TinyEps
from .tiny_models import tiny_diffusers_eps


def _sampler_timesteps(steps=20):
    return make_ddim_scheduler(make_train_scheduler(), steps, clip_x0=False).timesteps.tolist()


def test_grid_shape():
    ts = _sampler_timesteps()
    assert clean_estimate_grid(ts, 0, 1) == [ts[0], -1]
    g = clean_estimate_grid(ts, 3, 4)
    assert g[0] == ts[3] and g[-1] == -1 and len(g) == 5 and g[-2] == ts[-1]
    assert all(b < a for a, b in zip(g, g[1:]))
    assert len(clean_estimate_grid(ts, len(ts) - 2, 8)) == 3  # only one timestep remains after the current one
    with pytest.raises(ValueError):
        clean_estimate_grid(ts, 0, 0)
    with pytest.raises(ValueError):
        clean_estimate_grid(ts, len(ts), 2)


@pytest.mark.parametrize("form", ["noise", "data"])
def test_one_step_is_tweedie(form):
    model = TinyEps(torch.float64)
    sched = make_train_scheduler()
    levels = VPLevels(sched.alphas_cumprod)
    ts = _sampler_timesteps()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    for i in (0, 5, 15):
        t = ts[i]
        a = sched.alphas_cumprod[t].double()
        tweedie = (x - (1 - a).sqrt() * model(x, t)) / a.sqrt()
        assert torch.allclose(clean_estimate(model, x, ts, i, 1, levels, form), tweedie, rtol=1e-9, atol=1e-9)


def test_estimate_error_falls_with_n():
    model = TinyEps(torch.float64)
    levels = VPLevels(make_train_scheduler().alphas_cumprod)
    ts = _sampler_timesteps(50)
    x = torch.randn(4, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    i = 10
    with torch.no_grad():
        fine = solve(model, x, [*range(ts[i], -1, -2), -1], levels, "data")  # a fine ODE solve from the same x_t
    with torch.no_grad():
        errs = [float((clean_estimate(model, x, ts, i, n, levels) - fine).norm()) for n in (1, 2, 4, 8, 16)]
    assert errs[-1] < errs[0] and errs == sorted(errs, reverse=True), errs


# ------------------------------------------------------------------------------------------- guided sampler

TINY = UNetConfig(image_size=16, widths=(16, 32), attn_levels=(1,), text_dim=16, text_layers=1, heads=2)


def _tiny_setup(b=3, seed=0):
    torch.manual_seed(seed)
    model = ImageDenoiser(TINY).eval().requires_grad_(False)
    for p in model.parameters():  # zero-initialised layers would make ε (and the CFG direction) vanish
        if not p.any():
            p.normal_(0.0, 0.05)
    tokens = text.encode(["a red circle"] * b, TINY.caption_length)
    noise = torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    return model, tokens, noise, make_train_scheduler()


def brightness_loss(x0):
    """Per-sample loss that wants a bright image (a loss every model can satisfy)."""
    return (x0.mean(dim=(1, 2, 3)) - 0.8) ** 2


def test_no_guided_steps_is_plain_ddim():
    model, tokens, noise, sched = _tiny_setup()
    ref = ddim_sample(model, noise, tokens, sched, steps=10, guidance_scale=2.0)
    out = unguided_sample(model, noise, tokens, sched, brightness_loss, steps=10, guidance_scale=2.0)
    assert torch.allclose(out.x0, ref, atol=1e-6)
    assert out.nfe == 20 and out.vjp == 0


@pytest.mark.parametrize("gradient", ["adjoint", "autograd"])
def test_network_evaluation_count(gradient):
    model, tokens, noise, sched = _tiny_setup()
    steps, n, repeats = 10, 3, 2
    cfg = sag(n, window=(0.3, 0.7), repeats=repeats, gradient=gradient)
    out = guided_sample(model, noise, tokens, sched, brightness_loss, cfg, steps=steps, guidance_scale=2.0)
    k = len(guided_indices(steps, cfg.window))
    evals = k * repeats  # guided evaluations (time travel repeats each guided step)
    # outer CFG pair per evaluation; inner: n CFG pairs forward (+ n recomputed for the adjoint's VJPs)
    inner = (4 if gradient == "adjoint" else 2) * n
    assert out.nfe == 2 * (steps + k * (repeats - 1)) + evals * inner
    assert out.vjp == evals * 2 * n
    assert len(out.trace) == evals


def test_adjoint_and_autograd_guidance_give_the_same_samples():
    model, tokens, noise, sched = _tiny_setup()
    a = guided_sample(model, noise, tokens, sched, brightness_loss, sag(3), steps=8, guidance_scale=2.0, seed=1)
    b = guided_sample(
        model, noise, tokens, sched, brightness_loss, sag(3, gradient="autograd"), steps=8, guidance_scale=2.0, seed=1
    )
    assert torch.allclose(a.x0, b.x0, atol=1e-5)


@pytest.mark.parametrize(
    "config",
    [freedom(), sag(4), universal_guidance(), sag(2, step_rule="plain", strength=5.0)],
    ids=["freedom", "sag4", "ug", "plain"],
)
def test_guidance_lowers_the_loss(config):
    model, tokens, noise, sched = _tiny_setup(b=4)
    base = unguided_sample(model, noise, tokens, sched, brightness_loss, steps=10, guidance_scale=2.0)
    # not from step 0: at t = 999 ∂x̂₀/∂x_t = 1/√ᾱ ≈ 2·10⁴, where a fixed ("plain") step diverges — the reason for the
    # paper's normalised rule
    strong = replace(config, window=(0.1, 0.9), strength=3 * config.strength)
    out = guided_sample(model, noise, tokens, sched, brightness_loss, strong, steps=10, guidance_scale=2.0)
    assert out.loss.mean() < 0.8 * base.loss.mean(), (float(out.loss.mean()), float(base.loss.mean()))


def test_per_sample_step_size_keeps_samples_independent():
    model, tokens, noise, sched = _tiny_setup(b=4)
    cfg = sag(2, repeats=1)  # no time-travel noise: each sample's path depends on its own noise only
    full = guided_sample(model, noise, tokens, sched, brightness_loss, cfg, steps=8, guidance_scale=2.0)
    half = guided_sample(model, noise[:2], tokens[:2], sched, brightness_loss, cfg, steps=8, guidance_scale=2.0)
    assert torch.allclose(full.x0[:2], half.x0, atol=1e-5)


@pytest.mark.parametrize(
    "bad",
    [
        dict(n=0),
        dict(window=(0.7, 0.3)),
        dict(window=(-0.1, 0.5)),
        dict(repeats=0),
        dict(strength=-1.0),
        dict(strength=float("nan")),
        dict(method="dps"),
        dict(step_rule="adam"),
        dict(gradient="finite"),
        dict(method="ug", n=4),
        dict(backward_steps=-1),
    ],
)
def test_bad_guidance_config(bad):
    model, tokens, noise, sched = _tiny_setup(b=1)
    with pytest.raises(ValueError):
        guided_sample(model, noise, tokens, sched, brightness_loss, GuidanceConfig(**bad), steps=4)


def test_bad_call():
    model, tokens, noise, sched = _tiny_setup(b=2)
    with pytest.raises(ValueError, match="guidance_scale"):
        guided_sample(model, noise, tokens, sched, brightness_loss, sag(2), steps=4, guidance_scale=0.0)
    with pytest.raises(ValueError, match="batch"):
        guided_sample(model, noise, tokens[:1], sched, brightness_loss, sag(2), steps=4)


def test_works_with_a_diffusers_unet():
    """Any ε-prediction callable: a tiny random diffusers UNet2DConditionModel with embedding conditions."""
    from bytecourse.diffusion.ode import VPLevels, autograd_grad, symplectic_adjoint_grad
    from bytecourse.diffusion.sampling import guided_eps

    eps_model = tiny_diffusers_eps()
    cond = torch.randn(2, 5, 16)
    uncond = torch.zeros_like(cond)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sched = make_train_scheduler()
    out = guided_sample(
        eps_model, noise, cond, sched, brightness_loss, sag(3), steps=6, guidance_scale=2.0, uncond=uncond
    )
    assert out.x0.shape == noise.shape and torch.isfinite(out.x0).all() and out.vjp > 0
    # the symplectic adjoint through the diffusers UNet is the exact gradient of the n-step map
    ts = _sampler_timesteps(6)
    grid = clean_estimate_grid(ts, 1, 3)
    levels = VPLevels(sched.alphas_cumprod)
    eps_fn = lambda x, t: guided_eps(eps_model, x, t, cond, 2.0, uncond)  # noqa: E731
    total = lambda z: brightness_loss(z).sum()  # noqa: E731
    ga = symplectic_adjoint_grad(eps_fn, noise, grid, levels, total, "data").grad_x
    gb = autograd_grad(eps_fn, noise, grid, levels, total, "data").grad_x
    assert (ga - gb).norm() / gb.norm() < 1e-4


def test_memory_ratio_on_a_unet():
    """Peak bytes held for the backward pass on a (tiny) UNet: flat in n for the adjoint, ≥ n/2 times less at
    n = 16."""
    from bytecourse.diffusion.memory import SavedTensorMeter, tensor_bytes
    from bytecourse.diffusion.ode import VPLevels, autograd_grad, symplectic_adjoint_grad
    from bytecourse.diffusion.sampling import guided_eps

    model, tokens, noise, sched = _tiny_setup(b=1)
    levels = VPLevels(sched.alphas_cumprod)
    ts = _sampler_timesteps(20)
    eps_fn = lambda x, t: guided_eps(model, x, t, tokens, 2.0)  # noqa: E731
    total = lambda z: brightness_loss(z).sum()  # noqa: E731
    params = list(model.parameters())
    peaks = {}
    for n in (1, 16):
        grid = clean_estimate_grid(ts, 2, n)
        with SavedTensorMeter(exclude=params) as adj:
            adj.hold(tensor_bytes(noise) * len(grid))
            symplectic_adjoint_grad(eps_fn, noise, grid, levels, total, "data")
        with SavedTensorMeter(exclude=params) as auto:
            autograd_grad(eps_fn, noise, grid, levels, total, "data")
        peaks[n] = (adj.peak_bytes, auto.peak_bytes)
    assert peaks[16][0] < 1.2 * peaks[1][0], peaks  # flat (only the 16 small states are added)
    assert peaks[16][1] / peaks[16][0] >= 8, peaks


# ------------------------------------------------------------------------------------ chapter, exercises, widget

from bytecourse.sag import evaluate, widget  # noqa: E402


def test_guidance_table_and_slice_on_a_tiny_model():
    torch.manual_seed(0)
    model = ImageDenoiser(
        UNetConfig(image_size=32, widths=(16, 32), attn_levels=(1,), text_dim=16, text_layers=1, heads=2)
    ).eval()
    rows = [("unguided", None), ("FreeDoM (= SAG n=1)", freedom(window=(0.3, 0.4)))]
    table = evaluate.guidance_table(model, "style", [0, 1], rows=rows, n=2, progress=False)
    assert [r["setting"] for r in table["rows"]] == ["unguided", "FreeDoM (= SAG n=1)"]
    assert {"loss", "content", "realism", "left_hit", "nfe", "vjp"} <= set(table["rows"][0]["metrics"])
    live = evaluate.guidance_table(model, "style", [1], rows=rows, n=2, progress=False)
    for r in live["rows"]:
        r["metrics"].pop("seconds_per_sample")
    from bytecourse.evaluation import compare_slice

    assert compare_slice(live, table, 1, 1e-6) == []


def test_widget_callbacks_without_a_browser():
    from bytecourse.diffusion.classifier import ClassifierConfig, ShapesClassifier

    torch.manual_seed(0)
    model = ImageDenoiser(
        UNetConfig(image_size=32, widths=(16, 32), attn_levels=(1,), text_dim=16, text_layers=1, heads=2)
    ).eval()
    view = widget.sag_explorer(model, samples=1, classifier=ShapesClassifier(ClassifierConfig()).eval())
    view.refresh()
    assert view.result["n"] == 4 and view.result["guided"]["nfe"] > view.result["unguided"]["nfe"]
    view.controls["n"].value = 1  # what a learner's slider does
    assert view.result["n"] == 1 and view.calls == 2
    nfe_1 = view.result["guided"]["nfe"]
    view.controls["window"].value = (0.0, 0.0)  # nothing guided → as many evaluations as unguided
    assert view.result["guided"]["nfe"] == view.result["unguided"]["nfe"] < nfe_1
    view.controls["task"].value = "position"
    assert view.result["task"] == "position"
    with pytest.raises(ValueError):
        evaluate.make_loss("aesthetics")


def _front(points):
    """Made-up front: per strength, (content, loss) for each of 3 seeds."""
    return [
        {"metrics": {"content": {"per_seed": [c for c, _ in p]}, "loss": {"per_seed": [v for _, v in p]}}}
        for p in points
    ]


def test_front_verdict_has_three_outcomes_and_refuses_to_extrapolate():
    from bytecourse.sag.evaluate import compare_fronts

    weak = _front([[(0.9, 2.0)] * 3, [(0.5, 1.0)] * 3])  # loss 1.5 at content 0.70
    strong = _front([[(0.9, 1.5)] * 3, [(0.5, 0.5)] * 3])  # loss 1.0 at content 0.70
    wobbly = _front([[(0.9, 1.2), (0.9, 2.2), (0.9, 1.4)], [(0.5, 1.0), (0.5, 1.2), (0.5, 0.8)]])
    assert compare_fronts(strong, weak)["outcome"] == "SAG dominates"
    assert compare_fronts(weak, strong)["outcome"] == "SAG is dominated"
    assert compare_fronts(wobbly, weak)["outcome"] == "the fronts cross or overlap within spread"
    hits = compare_fronts(strong, weak, lower_is_better=False)  # e.g. a hit rate: higher is better
    assert hits["outcome"] == "SAG is dominated"
    assert compare_fronts(strong, weak)["sag"] == pytest.approx([1.0] * 3)
    with pytest.raises(ValueError, match="widen the sweep"):
        compare_fronts(strong, weak, level=0.95)


def _row(name, content, loss, realism):
    per = lambda v: {"per_seed": list(v), "mean": sum(v) / len(v)}  # noqa: E731
    return {"setting": name, "metrics": {"content": per(content), "loss": per(loss), "realism": per(realism)}}


def test_fronts_are_assembled_by_strength_and_judged_by_computed_verdicts():
    """Strength 0 is the unguided row, 1 the method table's, the rest the sweep's; the verdict reads SAG's win, and
    says "not covered" (not a made-up number) when a sweep never reaches the matched content."""
    methods = ("FreeDoM (= SAG n=1)", "SAG n=4")
    table = {
        "rows": [
            _row("unguided", (0.9, 0.9, 0.9), (2.0, 2.0, 2.0), (0.99, 0.99, 0.99)),
            _row("FreeDoM (= SAG n=1)", (0.6, 0.6, 0.6), (1.6, 1.6, 1.6), (0.95, 0.95, 0.95)),
            _row("SAG n=4", (0.6, 0.6, 0.6), (1.2, 1.3, 1.1), (0.96, 0.96, 0.96)),
        ]
    }
    sweep = {
        "rows": [
            _row("FreeDoM (= SAG n=1), strength 2", (0.4, 0.4, 0.4), (1.4, 1.4, 1.4), (0.9, 0.9, 0.9)),
            _row("SAG n=4, strength 2", (0.4, 0.4, 0.4), (0.9, 0.9, 0.9), (0.92, 0.92, 0.92)),
        ]
    }
    fr = evaluate.fronts(table, sweep, methods)
    assert [p["strength"] for p in fr["SAG n=4"]] == [0.0, 1.0, 2.0]
    verdicts = evaluate.front_verdicts(table, sweep, "style", methods)
    assert {(v["x"], v["outcome"]) for v in verdicts} == {("content", "SAG dominates"), ("realism", "SAG dominates")}
    assert all("**SAG dominates**" in evaluate.verdict_line(v) for v in verdicts)
    swapped = {"rows": [table["rows"][0], {**table["rows"][1], "setting": "SAG n=4"}]}
    swapped["rows"].append({**table["rows"][2], "setting": "FreeDoM (= SAG n=1)"})
    swapped_sweep = {"rows": [{**sweep["rows"][0], "setting": "SAG n=4, strength 2"}]}
    swapped_sweep["rows"].append({**sweep["rows"][1], "setting": "FreeDoM (= SAG n=1), strength 2"})
    worse = evaluate.front_verdicts(swapped, swapped_sweep, "style", methods)
    assert {v["outcome"] for v in worse} == {"SAG is dominated"}  # the verdict can say "not reproduced"
    high = evaluate.front_verdicts(table, sweep, "style", methods, level=0.95)
    assert {v["outcome"] for v in high if v["x"] == "content"} == {"not covered by the sweep"}
