import pytest
import torch

from bytecourse.diffusion import ddim_sample, make_ddim_scheduler, make_train_scheduler
from bytecourse.diffusion.memory import SavedTensorMeter, tensor_bytes
from bytecourse.diffusion.ode import (
    VPLevels,
    autograd_grad,
    continuous_adjoint_grad,
    euler_step,
    solve,
    symplectic_adjoint_grad,
)


class TinyEps(torch.nn.Module):
    """A smooth nonlinear ε-network on 2×4×4 inputs (a stand-in for a UNet in exactness tests)."""

    def __init__(self, dtype=torch.float64, hidden: int = 32):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(0.3 * torch.randn(hidden, 33, generator=g, dtype=dtype))
        self.w2 = torch.nn.Parameter(0.3 * torch.randn(32, hidden, generator=g, dtype=dtype) * (32 / hidden) ** 0.5)

    def forward(self, x, t):
        b = x.shape[0]
        h = torch.cat([x.reshape(b, -1), torch.full((b, 1), t / 1000.0, dtype=x.dtype)], 1)
        return (torch.tanh(h @ self.w1.T) @ self.w2.T / 6).reshape_as(x)


def _grid(n):
    sched = make_ddim_scheduler(make_train_scheduler(), 16, clip_x0=False)
    ts = sched.timesteps.tolist()
    sub = ts[:: max(1, len(ts) // n)][:n]
    return sub + [-1]


@pytest.mark.parametrize("form", ["noise", "data"])
def test_euler_step_is_a_ddim_step(form):
    model = TinyEps(torch.float32)
    levels = VPLevels(make_train_scheduler().alphas_cumprod)
    x = torch.randn(3, 2, 4, 4)
    ddim = make_ddim_scheduler(make_train_scheduler(), 4, clip_x0=False)
    for t in ddim.timesteps.tolist():
        s = t - 250 if t >= 250 else -1
        ref = ddim.step(model(x, t), t, x, eta=0.0).prev_sample
        assert torch.allclose(euler_step(model, x, t, s, levels, form), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-5), (torch.float32, 1e-3)])
@pytest.mark.parametrize("n", list(range(1, 17)))
def test_symplectic_adjoint_is_exact(dtype, tol, n):
    model = TinyEps(dtype)
    levels = VPLevels(make_train_scheduler().alphas_cumprod)
    x = torch.randn(2, 2, 4, 4, dtype=dtype, generator=torch.Generator().manual_seed(n))
    target = torch.randn(2, 2, 4, 4, dtype=dtype)
    loss_fn = lambda x0: ((x0 - target) ** 2).sum()
    grid = _grid(n)
    params = list(model.parameters())
    la, ga, pa, _, _ = vars(symplectic_adjoint_grad(model, x, grid, levels, loss_fn, "noise", params)).values()
    lb, gb, pb, _, _ = vars(autograd_grad(model, x, grid, levels, loss_fn, "noise", params)).values()
    assert torch.allclose(la, lb)
    assert (ga - gb).norm() / gb.norm() <= tol
    for a, b in zip(pa, pb):
        assert (a - b).norm() / b.norm() <= tol


def test_adjoint_memory_is_flat_in_n():
    model = TinyEps(torch.float64, hidden=512).requires_grad_(False)  # like a UNet: one step's graph ≫ one state
    levels = VPLevels(make_train_scheduler().alphas_cumprod)
    x = torch.randn(64, 2, 4, 4, dtype=torch.float64)
    loss_fn = lambda x0: (x0**2).sum()
    peaks = {}
    for n in (2, 16):
        grid = _grid(n)
        with SavedTensorMeter() as meter:
            meter.hold(tensor_bytes(x) * len(grid))  # the adjoint keeps every state
            symplectic_adjoint_grad(model, x, grid, levels, loss_fn)
        with SavedTensorMeter() as auto:
            xg = x.clone().requires_grad_(True)
            loss_fn(solve(model, xg, grid, levels))
        peaks[n] = (meter.peak_bytes, auto.peak_bytes)
    adj_growth = peaks[16][0] / peaks[2][0]
    auto_growth = peaks[16][1] / peaks[2][1]
    # autograd holds one graph per step (+ the weights, once); the adjoint one graph + one state per step
    slope_auto = (peaks[16][1] - peaks[2][1]) / 14
    slope_adj = (peaks[16][0] - peaks[2][0]) / 14
    assert auto_growth > 4 and adj_growth < 1.5 and slope_auto > 10 * slope_adj, peaks


def test_bad_grid():
    levels = VPLevels(make_train_scheduler().alphas_cumprod)
    with pytest.raises(ValueError):
        solve(lambda x, t: x, torch.zeros(1), [10, 20], levels)
    with pytest.raises(ValueError):
        euler_step(lambda x, t: x, torch.zeros(1), 10, 5, levels, form="rho")


def test_sampler_and_ode_agree():
    model = TinyEps(torch.float32)
    sched = make_train_scheduler()
    x = torch.randn(2, 2, 4, 4)
    ddim = make_ddim_scheduler(sched, 8, clip_x0=False)
    ts = ddim.timesteps.tolist()
    stride = 1000 // 8  # the levels DDIMScheduler.step jumps to
    grid = [ts[0]] + [t - stride for t in ts[:-1]] + [-1]
    out = ddim_sample(
        lambda x, t, c: model(x, int(t[0])), x, torch.zeros(2, 12, dtype=torch.long), sched, steps=8, clip_x0=False
    )
    assert torch.allclose(solve(model, x, grid, VPLevels(sched.alphas_cumprod)), out, atol=1e-4, rtol=1e-4)


def test_continuous_adjoint_is_exact_only_as_the_step_shrinks():
    """The continuous adjoint re-integrates y backwards, so its gradient of the n-step Euler map is off by the
    solver's error (SAG §3.3, the brief's §1.6 item 1); on finer grids of the same interval it approaches the exact
    gradient, while the symplectic adjoint is exact on every grid."""
    model = TinyEps()
    levels = VPLevels(make_train_scheduler().alphas_cumprod)
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss = lambda z: (z**2).sum()  # noqa: E731
    errs = []
    for n in (2, 8, 64):
        grid = sorted({int(round(v)) for v in torch.linspace(600, 0, n + 1).tolist()}, reverse=True) + [-1]
        exact = autograd_grad(model, x, grid, levels, loss, "data").grad_x
        sa = symplectic_adjoint_grad(model, x, grid, levels, loss, "data").grad_x
        ca = continuous_adjoint_grad(model, x, grid, levels, loss, "data").grad_x
        assert float((sa - exact).norm() / exact.norm()) < 1e-10
        errs.append(float((ca - exact).norm() / exact.norm()))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.2 * errs[0], errs
