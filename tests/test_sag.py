import pytest
import torch

from bytecourse.diffusion import make_ddim_scheduler, make_train_scheduler
from bytecourse.diffusion.ode import VPLevels, solve
from bytecourse.sag import clean_estimate, clean_estimate_grid

from .test_ode import TinyEps


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
