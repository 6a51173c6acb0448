import pytest
import torch

from bytecourse import text
from bytecourse.adjointdpm import (
    PFODE,
    applications,
    autograd_gradients,
    continuous_adjoint_gradients,
    discrete_adjoint_gradients,
    ode_step,
    time_grid,
    widget,
)
from bytecourse.diffusion import ImageDenoiser, UNetConfig, guided_eps, make_train_scheduler
from bytecourse.diffusion.memory import SavedTensorMeter, tensor_bytes
from bytecourse.diffusion.ode import VPLevels, euler_step

from .test_ode import TinyEps
from .tiny_models import tiny_diffusers_eps

ACP = make_train_scheduler().alphas_cumprod


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _problem(dtype=torch.float64):
    model = TinyEps(dtype)
    x = torch.randn(2, 2, 4, 4, dtype=dtype, generator=torch.Generator().manual_seed(0))
    target = torch.randn(2, 2, 4, 4, dtype=dtype, generator=torch.Generator().manual_seed(1))
    return model, x, lambda z: ((z - target) ** 2).sum()


def test_grid_and_bad_input():
    g = time_grid(5, 980)
    assert g[0] == 980 and g[-1] == 0 and len(g) == 6 and all(b < a for a, b in zip(g, g[1:]))
    with pytest.raises(ValueError):
        time_grid(0)
    with pytest.raises(ValueError):
        PFODE(lambda x, t: x, ACP, [10, 20], "rho")
    with pytest.raises(ValueError):
        PFODE(lambda x, t: x, ACP, [20, 10], "sigma")
    ode = PFODE(lambda x, t: x, ACP, [20, 10], "rho")
    with pytest.raises(ValueError):
        ode_step(ode, torch.zeros(1, 2), 0, "rk4")


def test_rho_euler_is_the_substrate_ddim_step():
    model, x, _ = _problem()
    grid = time_grid(8, 980)
    ode = PFODE(model, ACP, grid, "rho")
    y = ode.to_y(x)
    ref = x
    levels = VPLevels(ACP)
    for m in range(8):
        y = ode_step(ode, y, m)
        ref = euler_step(model, ref, grid[m], grid[m + 1], levels, "noise")
    assert torch.allclose(ode.to_x(y), ref, atol=1e-10)


@pytest.mark.parametrize("coords", ["rho", "t"])
@pytest.mark.parametrize("method", ["euler", "heun"])
def test_discrete_adjoint_is_exact(coords, method):
    model, x, loss = _problem()
    params = list(model.parameters())
    ode = PFODE(model, ACP, time_grid(10, 980), coords)
    a = discrete_adjoint_gradients(ode, x, loss, params, method)
    b = autograd_gradients(ode, x, loss, params, method)
    assert _rel(a.grad_x, b.grad_x) < 1e-10 and all(_rel(p, q) < 1e-10 for p, q in zip(a.grad_params, b.grad_params))


@pytest.mark.parametrize("coords", ["rho", "t"])
def test_continuous_adjoint_converges_with_the_solver_order(coords):
    model, x, loss = _problem()
    params = list(model.parameters())
    errs = {}
    for method in ("euler", "heun"):
        for n in (20, 100, 400):
            ode = PFODE(model, ACP, time_grid(n, 980), coords)
            c = continuous_adjoint_gradients(ode, x, loss, params, method)
            r = autograd_gradients(ode, x, loss, params, method)
            errs[method, n] = (_rel(c.grad_x, r.grad_x), _rel(c.grad_params[0], r.grad_params[0]))
    for method in ("euler", "heun"):
        assert errs[method, 400][0] < errs[method, 100][0] < errs[method, 20][0], errs
    assert errs["heun", 400][0] < 0.1 * errs["euler", 400][0], errs  # second order beats first order


def test_rho_coordinates_give_the_smaller_continuous_adjoint_error():
    """The paper's claim, on a smooth toy ε: Euler in ρ (exponential integrator) vs Euler on the raw PF-ODE in t."""
    model, x, loss = _problem()
    err = {}
    for coords in ("rho", "t"):
        ode = PFODE(model, ACP, time_grid(100, 980), coords)
        err[coords] = _rel(continuous_adjoint_gradients(ode, x, loss).grad_x, autograd_gradients(ode, x, loss).grad_x)
    assert err["rho"] < err["t"], err


def test_memory_flat_for_both_adjoints_linear_for_autograd():
    torch.manual_seed(0)
    model = ImageDenoiser(
        UNetConfig(image_size=16, widths=(16, 32), attn_levels=(1,), text_dim=16, text_layers=1, heads=2)
    ).eval()
    model.requires_grad_(False)
    tokens = text.encode(["a red circle"], 12)
    x = torch.randn(1, 3, 16, 16)
    params = list(model.parameters())
    loss = lambda z: (z**2).sum()  # noqa: E731
    peaks = {}
    for n in (4, 16):
        ode = PFODE(lambda x, t: guided_eps(model, x, t, tokens, 2.0), ACP, time_grid(n, 980), "rho")
        row = {}
        for name, route in (
            ("cont", continuous_adjoint_gradients),
            ("disc", discrete_adjoint_gradients),
            ("auto", autograd_gradients),
        ):
            with SavedTensorMeter(exclude=params) as meter:
                meter.hold(tensor_bytes(x) * ((n + 1) if name == "disc" else 2 if name == "cont" else 0))
                route(ode, x, loss)
            row[name] = meter.peak_bytes
        peaks[n] = row
    assert peaks[16]["cont"] < 1.1 * peaks[4]["cont"] and peaks[16]["disc"] < 1.3 * peaks[4]["disc"], peaks
    assert peaks[16]["auto"] > 3 * peaks[4]["auto"], peaks


def test_gradients_wrt_a_condition_embedding_and_a_diffusers_unet():
    eps_model = tiny_diffusers_eps()
    c = torch.randn(2, 5, 16, requires_grad=True)
    uncond = torch.zeros(2, 5, 16)
    x = torch.randn(2, 3, 8, 8)
    ode = PFODE(lambda x, t: guided_eps(eps_model, x, t, c, 2.0, uncond), ACP, time_grid(4, 980), "rho")
    loss = lambda z: (z**2).sum()  # noqa: E731
    d = discrete_adjoint_gradients(ode, x, loss, [c])
    a = autograd_gradients(ode, x, loss, [c])
    k = continuous_adjoint_gradients(ode, x, loss, [c])
    assert _rel(d.grad_x, a.grad_x) < 1e-4 and _rel(d.grad_params[0], a.grad_params[0]) < 1e-4
    assert (
        torch.isfinite(k.grad_x).all() and torch.isfinite(k.grad_params[0]).all() and k.grad_params[0].abs().sum() > 0
    )


def test_attack_projection_and_embedding_condition():
    delta = torch.randn(3, 3, 4, 4) * 10
    x_T = torch.randn(3, 3, 4, 4)
    p = applications._project(delta, x_T, 0.2)
    assert (p.flatten(1).norm(dim=1) <= 0.2 * x_T.flatten(1).norm(dim=1) + 1e-5).all()
    torch.manual_seed(0)
    model = ImageDenoiser(
        UNetConfig(image_size=16, widths=(16, 32), attn_levels=(1,), text_dim=16, text_layers=1, heads=2)
    ).eval()
    tokens = text.encode(["a red circle"], 12)
    c = model.text(tokens)
    assert torch.allclose(
        model(torch.zeros(1, 3, 16, 16), 10, tokens), model(torch.zeros(1, 3, 16, 16), 10, c), atol=1e-6
    )
    with pytest.raises(ValueError):
        model(torch.zeros(1, 3, 16, 16), 10, torch.zeros(1, 12, 8))
    word = torch.zeros(16)
    assert torch.allclose(applications.with_new_word(model, tokens, word), c)


def test_widget_callbacks_without_a_browser():
    torch.manual_seed(0)
    model = ImageDenoiser(
        UNetConfig(image_size=32, widths=(16, 32), attn_levels=(1,), text_dim=16, text_layers=1, heads=2)
    ).eval()
    view = widget.adjoint_explorer(model)
    view.refresh()
    r = view.result["routes"]
    assert view.result["num_steps"] == 10 and r["discrete"]["rel_error"] < 1e-4
    view.controls["num_steps"].value = 5  # what a learner's slider does
    assert view.result["num_steps"] == 5 and view.calls == 2
    view.controls["coords"].value = "t"
    view.controls["method"].value = "heun"
    assert view.result["coords"] == "t" and view.result["method"] == "heun"
    assert view.result["grid"] == "log_rho"
    view.controls["grid"].value = "time"
    assert view.result["grid"] == "time" and view.calls == 5
    assert view.result["routes"]["autograd"]["peak_bytes"] > view.result["routes"]["continuous"]["peak_bytes"]
    with pytest.raises(ValueError):
        widget.fidelity_preview(model, 5, method="rk4")
    with pytest.raises(ValueError):
        widget.fidelity_preview(model, 5, grid="karras")


def _tiny_app_model(size: int = 16) -> ImageDenoiser:
    torch.manual_seed(0)
    model = ImageDenoiser(
        UNetConfig(image_size=size, widths=(16, 32), attn_levels=(1,), text_dim=16, text_layers=1, heads=2)
    )
    with torch.no_grad():  # the output convolution is zero-initialised: give it weights, as training would
        model.out[-1].weight.normal_(0, 0.1)
    return model.eval().requires_grad_(False)


def test_security_audit_stays_in_budget_and_raises_the_classifiers_loss():
    """(a): the attack moves x_T by at most ``budget``·‖x_T‖ and climbs the cross-entropy of the classifier's own
    label (its loss, the negative cross-entropy, falls)."""
    model = _tiny_app_model()
    torch.manual_seed(1)
    head = torch.nn.Linear(3 * 16 * 16, 6)
    classifier = lambda x: {"colour": head(x.flatten(1))}  # noqa: E731
    losses = []
    out = applications.security_audit(
        model,
        classifier,
        seed=0,
        n=2,
        iters=3,
        budget=0.2,
        lr=0.05,
        num_steps=3,
        on_iter=lambda i, l, d: losses.append(l),
    )
    assert out["rel_delta"] <= 0.2 + 1e-5 and 0 <= out["flipped"] <= 1
    assert out["images"][0].shape == out["images"][1].shape == (2, 3, 16, 16)
    assert losses[-1] < losses[0]
    # the paper's route on another sampler (Heun, log-ρ grid): runs, stays in budget; its gradient error is finite
    cont = applications.security_audit(
        model, classifier, seed=0, n=2, iters=2, route="continuous", method="heun", grid="log_rho", num_steps=3
    )
    assert cont["rel_delta"] <= 0.2 + 1e-5
    err = applications.audit_gradient_error(model, classifier, 0, n=2, num_steps=3, method="heun", grid="log_rho")
    assert err["grad_rel_error"] >= 0 and -1 <= err["grad_cosine"] <= 1


def test_learn_effect_word_fits_the_examples_and_stylize_tunes_only_the_output_layers():
    model = _tiny_app_model()
    examples, captions = applications.effect_examples(n=2, image_size=16)
    assert all(applications.effect_present(examples))  # the examples show the effect by the oracle's measure
    torch.manual_seed(2)
    head = torch.nn.Linear(3 * 16 * 16, 9)
    clf = lambda x: {"colour": head(x.flatten(1))[:, :6], "shape": head(x.flatten(1))[:, 6:]}  # noqa: E731
    word, losses = applications.learn_effect_word(
        model, examples, captions, iters=3, lr=0.01, num_steps=3, batch=2, classifier=clf
    )
    assert word.shape == (16,) and word.abs().sum() > 0 and all(torch.isfinite(torch.tensor(losses)))
    alone, _ = applications.learn_effect_word(
        model, examples, captions, iters=2, num_steps=3, batch=2, content_weight=0
    )
    assert torch.isfinite(alone).all() and not torch.equal(alone, word)
    with pytest.raises(ValueError, match="one-object captions"):
        applications.learn_effect_word(model, examples, ["a red circle and a blue square"] * 2, iters=1, batch=2)
    big = _tiny_app_model(32)
    before = {k: v.clone() for k, v in big.state_dict().items()}
    tuned, curve = applications.stylize(big, iters=2, batch=2, num_steps=3)
    assert len(curve) == 2 and all(torch.isfinite(torch.tensor(curve)))
    changed = {k for k, v in tuned.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("out.", "unstem.")) for k in changed)
    assert all(torch.equal(v, before[k]) for k, v in big.state_dict().items())  # the model itself is untouched


def test_soft_side_reads_the_oracles_box_side_on_world_images():
    """The differentiable size that (b) optimises agrees with the oracle's box side on world images, and
    :func:`effect_side` splits the world at its radius quantile."""
    from bytecourse.oracle import detect_objects
    from bytecourse.worlds import ShapesConfig, make_shapes

    b = make_shapes(64, 11, ShapesConfig(), num_objects=1)
    side = torch.tensor([max(o.box[2] - o.box[0], o.box[3] - o.box[1]) for o, *_ in detect_objects(b.images)])
    soft = applications.soft_side(b.images * 2 - 1, b.captions)
    assert float((soft - side).abs().mean()) < 0.02
    large = 2 * b.radii[:, 0] / 32 >= applications.effect_side()
    assert 0.1 < float(large.float().mean()) < 0.45
    assert torch.tensor(applications.effect_present(b.images)).eq(large).float().mean() > 0.85


# --- issue 16: grids in log ρ, the converged reference, the adaptive route ------------------------------------------


def test_log_rho_and_rho_grids():
    from bytecourse.adjointdpm.solvers import level_at_rho, make_grid, rho_at

    g = make_grid(8, "log_rho", 980, 0, ACP)
    assert g[0] == 980 and g[-1] == 0 and len(g) == 9 and all(b < a for a, b in zip(g, g[1:]))
    rhos = torch.tensor([rho_at(t, ACP) for t in g], dtype=torch.float64)
    ratios = rhos[1:] / rhos[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-6)  # every step shrinks ρ by one factor
    steps = torch.tensor([rho_at(t, ACP) for t in make_grid(8, "rho", 980, 0, ACP)]).diff()
    assert torch.allclose(steps, steps[0].expand_as(steps), rtol=1e-6)
    for t in (0, 3, 250.25, 979.9):
        assert abs(level_at_rho(rho_at(t, ACP), ACP) - t) < 1e-6
    # fractional levels: α, σ between the table's neighbours, the table itself at integers
    ode = PFODE(lambda x, t: x, ACP, [980, 500.5, 0], "rho")
    a_mid, a_lo, a_hi = ode.alpha_sigma(1, torch.float64)[0], ACP[500].double().sqrt(), ACP[501].double().sqrt()
    assert a_hi < a_mid < a_lo and ode.alpha_sigma(0, torch.float64)[0] == ACP[980].double().sqrt()
    assert make_grid(5, "time", 980) == time_grid(5, 980)
    with pytest.raises(ValueError):
        make_grid(5, "karras", 980, 0, ACP)
    with pytest.raises(ValueError):
        make_grid(5, "log_rho", 980)  # a ρ grid needs the schedule
    with pytest.raises(ValueError):
        PFODE(lambda x, t: x, ACP, [980, 980.5, 0], "rho")


def test_heun_on_the_log_rho_grid_approaches_the_converged_gradient_fastest():
    """On a smooth toy ε the continuous adjoint's error against a converged reference falls with N, and Heun on the
    log-ρ grid in ρ beats the raw PF-ODE in t on the time grid at the same N."""
    from bytecourse.adjointdpm.solvers import make_grid

    model, x, loss = _problem()
    params = list(model.parameters())
    ref = discrete_adjoint_gradients(
        PFODE(model, ACP, make_grid(400, "log_rho", 980, 0, ACP), "rho"), x, loss, params, "heun"
    )
    err = {}
    for coords, grid in (("rho", "log_rho"), ("t", "time")):
        for n in (10, 40):
            ode = PFODE(model, ACP, make_grid(n, grid, 980, 0, ACP), coords)
            err[grid, n] = _rel(continuous_adjoint_gradients(ode, x, loss, params, "heun").grad_x, ref.grad_x)
    assert err["log_rho", 40] < err["log_rho", 10] and err["log_rho", 10] < err["time", 10], err
    assert err["log_rho", 40] < 0.01, err
    # reading y from the forward states instead of re-integrating it: converges as well
    ode = PFODE(model, ACP, make_grid(40, "log_rho", 980, 0, ACP), "rho")
    ck = continuous_adjoint_gradients(ode, x, loss, params, "heun", checkpoints=True)
    assert _rel(ck.grad_x, ref.grad_x) < 0.01 and _rel(ck.grad_params[0], ref.grad_params[0]) < 0.05


def test_adaptive_route_cross_checks_the_reference():
    """torchdiffeq's odeint_adjoint (the paper's tool, dopri5 in log ρ) and the discrete adjoint of Heun on 400 log-ρ
    steps agree on every gradient: two independent routes to the converged ODE gradient."""
    from bytecourse.adjointdpm.solvers import adaptive_adjoint_gradients, make_grid

    model, x, loss = _problem()
    params = list(model.parameters())
    ref = discrete_adjoint_gradients(
        PFODE(model, ACP, make_grid(400, "log_rho", 980, 0, ACP), "rho"), x, loss, params, "heun"
    )
    g, nfe = adaptive_adjoint_gradients(PFODE(model, ACP, [980, 0], "rho"), x, loss, params, rtol=1e-6, atol=1e-6)
    assert _rel(g.grad_x, ref.grad_x) < 1e-3 and all(_rel(p, q) < 1e-3 for p, q in zip(g.grad_params, ref.grad_params))
    assert nfe["nfe_forward"] > 0 and nfe["nfe_backward"] > 0
    with pytest.raises(ValueError):
        adaptive_adjoint_gradients(PFODE(model, ACP, [980, 0], "t"), x, loss)


def _fidelity_table(log_rho_heun: float, log_rho_euler: float, t_err: float) -> dict:
    def metrics(v):
        return {k: {"mean": v, "min": v * 0.9, "max": v * 1.1} for k in ("cont_rel_x", "cont_rel_c", "cont_rel_theta")}

    rows = [
        {"method": "heun", "coords": "rho", "grid": "log_rho", "N": 20, "metrics": metrics(log_rho_heun)},
        {"method": "euler", "coords": "rho", "grid": "log_rho", "N": 20, "metrics": metrics(log_rho_euler)},
        {"method": "heun", "coords": "t", "grid": "time", "N": 20, "metrics": metrics(t_err)},
        {"method": "euler", "coords": "t", "grid": "time", "N": 20, "metrics": metrics(t_err)},
    ]
    return {"rows": rows, "seeds": [0, 1, 2]}


def test_fidelity_verdicts_can_say_not_reproduced():
    from bytecourse.adjointdpm.evaluate import fidelity_verdicts

    good = fidelity_verdicts(_fidelity_table(0.05, 0.3, 0.8))
    assert {v["outcome"] for v in good.values()} == {"reproduced"}
    bad = fidelity_verdicts(_fidelity_table(0.2, 0.9, 0.5))
    assert bad["heun_log_rho_floor"]["outcome"] == "not reproduced" and "NOT" in bad["heun_log_rho_floor"]["line"]
    assert bad["heun_below_t"]["outcome"] == "reproduced" and bad["euler_below_t"]["outcome"] == "not reproduced"
    close = fidelity_verdicts(_fidelity_table(0.2, 0.3, 0.31))  # means below, ranges overlapping
    assert close["euler_below_t"]["outcome"] == "inconclusive"


def test_fidelity_suspects_read_the_table():
    from bytecourse.adjointdpm.evaluate import fidelity_suspects

    def metrics(**v):
        return {k: {"mean": x, "min": x, "max": x} for k, x in v.items()}

    rows = [
        {"method": "heun", "coords": "rho", "grid": "log_rho", "N": 10, "metrics": metrics(cont_rel_x=0.5)},
        {
            "method": "heun",
            "coords": "rho",
            "grid": "log_rho",
            "N": 20,
            "metrics": metrics(cont_rel_x=0.08, disc_rel_x=0.05, ckpt_rel_x=0.07),
        },
        {"method": "heun", "coords": "rho", "grid": "time", "N": 20, "metrics": metrics(cont_rel_x=0.9)},
        {"method": "heun", "coords": "t", "grid": "time", "N": 20, "metrics": metrics(cont_rel_x=1.2)},
        {
            "method": "dopri5",
            "coords": "rho",
            "grid": "adaptive",
            "N": 1e-3,
            "metrics": metrics(cont_rel_x=0.3, nfe_forward=50, nfe_backward=60),
        },
    ]
    lines = fidelity_suspects({"rows": rows})
    assert "continuous adjoint 0.08; the exact gradient of the same 20-step solve 0.05" in lines[0]
    assert "time grid 0.9, log-ρ grid 0.08, ρ-uniform grid nan" in lines[1] and "t 1.2 vs ρ 0.9" in lines[2]
    assert lines[3].endswith("N = 20") and "50 + 60 network evaluations" in lines[4]
    rows[1]["metrics"]["cont_rel_x"]["mean"] = 0.2
    assert "not reached up to N = 20" in fidelity_suspects({"rows": rows})[3]


def test_application_verdicts_can_say_not_reproduced():
    from bytecourse.adjointdpm import evaluate

    def m(v):
        return {"mean": v, "min": v, "max": v, "std": 0.0, "per_seed": [v]}

    audit = {"flipped": m(0.9), "oracle_colour_changed": m(0.9), "rel_delta": m(0.2)}
    effect = {k: m(v) for k, v in dict(effect=0.3, base_effect=0.25, content=0.7, base_content=0.7).items()}
    effect |= {"realism": m(0.9), "base_realism": m(0.9)}
    style = {"gram_ratio": m(0.7), "content_kept": m(0.9)}
    tables = {
        "audit": {"rows": [{"setting": "a", "metrics": audit}]},
        "effect": {"rows": [{"setting": "b", "metrics": effect}]},
        "style": {"rows": [{"setting": "c", "metrics": style}]},
    }
    v = evaluate.application_verdicts(tables)
    assert v["audit_0"]["outcome"] == "reproduced"
    assert v["effect_0"]["outcome"] == "not reproduced" and v["style"]["outcome"] == "not reproduced"
    effect["effect"] = m(0.6)
    style["gram_ratio"] = m(0.4)
    v = evaluate.application_verdicts(tables)
    assert v["effect_0"]["outcome"] == "reproduced" and v["style"]["outcome"] == "reproduced"
