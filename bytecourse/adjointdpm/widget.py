"""Chapter 02's widget: number of steps, solver, coordinates and grid → the three gradients side by side."""

from __future__ import annotations

import time

from .. import text
from ..diffusion import initial_noise, to_image_space
from ..diffusion.image_model import EVAL_SEED_OFFSET, eval_captions
from ..diffusion.memory import SavedTensorMeter, tensor_bytes
from .applications import make_ode, style_loss
from .evaluate import cosine, relative_error
from .solvers import COORDS, GRIDS, autograd_gradients, continuous_adjoint_gradients, discrete_adjoint_gradients


def fidelity_preview(
    model, num_steps: int, method: str = "euler", coords: str = "rho", seed: int = 0, grid: str = "log_rho"
) -> dict:
    """Pure function behind the widget: the three routes' ∂L/∂x_T for one sample at one setting (``grid``: see
    :func:`.solvers.make_grid`), their agreement with autograd through the same solve, and the peak bytes each holds
    for its backward pass. (The stored tables measure every route against a converged reference instead; that costs
    200 Heun steps, too slow for a slider.)"""
    if method not in ("euler", "heun") or coords not in COORDS or grid not in GRIDS:
        raise ValueError(
            f"method must be euler/heun, coords one of {COORDS}, grid one of {GRIDS}; got {method!r}, {coords!r}, "
            f"{grid!r}"
        )
    caps = eval_captions(seed, 1, 1, model.config.image_size)
    tokens = text.encode(caps, model.config.caption_length)
    x_T = initial_noise((1, 3, model.config.image_size, model.config.image_size), EVAL_SEED_OFFSET + seed)
    loss = style_loss()
    loss_fn = lambda x0: loss(x0).sum()  # noqa: E731
    ode = make_ode(model, tokens, int(num_steps), coords, grid=grid)
    params = list(model.parameters())
    out, grads = {}, {}
    for name, route in (
        ("continuous", continuous_adjoint_gradients),
        ("discrete", discrete_adjoint_gradients),
        ("autograd", autograd_gradients),
    ):
        with SavedTensorMeter(exclude=params) as meter:
            meter.hold(tensor_bytes(x_T) * {"continuous": 2, "discrete": int(num_steps) + 1, "autograd": 0}[name])
            t0 = time.time()
            g = route(ode, x_T, loss_fn, (), method)
        grads[name] = g
        out[name] = {"peak_bytes": meter.peak_bytes, "seconds": time.time() - t0}
    ref = grads["autograd"].grad_x
    for name in ("continuous", "discrete"):
        out[name] |= {"rel_error": relative_error(grads[name].grad_x, ref), "cosine": cosine(grads[name].grad_x, ref)}
    return {
        "num_steps": int(num_steps),
        "method": method,
        "coords": coords,
        "grid": grid,
        "caption": caps[0],
        "routes": out,
        "x0": to_image_space(grads["autograd"].end.clamp(-1, 1)),
        "grads": {k: v.grad_x for k, v in grads.items()},
    }


def render_fidelity(result: dict) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display

    r = result["routes"]
    print(
        f"N={result['num_steps']} · {result['method']} · {result['coords']}-coords · "
        f"{result['grid'].replace('_', '-')} grid → continuous adjoint: rel. error "
        f"{r['continuous']['rel_error']:.3g}, cosine {r['continuous']['cosine']:.3f}; discrete adjoint: rel. error "
        f"{r['discrete']['rel_error']:.1e}; peak MB held: continuous {r['continuous']['peak_bytes'] / 1e6:.2f}, "
        "discrete "
        f"{r['discrete']['peak_bytes'] / 1e6:.2f}, autograd {r['autograd']['peak_bytes'] / 1e6:.2f}"
    )
    fig, axes = plt.subplots(1, 5, figsize=(12, 2.6))
    axes[0].imshow(result["x0"][0].permute(1, 2, 0).numpy())
    axes[0].set_title(f"x₀: “{result['caption']}”", fontsize=8)
    for ax, name in zip(axes[1:4], ("autograd", "discrete", "continuous")):
        g = result["grads"][name][0].abs().sum(0)
        ax.imshow(g.numpy(), cmap="magma")
        ax.set_title(f"|∂L/∂x_T| {name}", fontsize=8)
    for ax in axes[:4]:
        ax.axis("off")
    names = ["continuous", "discrete", "autograd"]
    axes[4].bar(names, [r[n]["peak_bytes"] / 1e6 for n in names], color=["#4c72b0", "#55a868", "#c44e52"])
    axes[4].set_ylabel("peak MB for backward")
    axes[4].tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    display(fig)
    plt.close(fig)


def adjoint_explorer(model):
    """The main widget of chapter 02: solver steps, solver, coordinates and grid → gradient error and memory."""
    import ipywidgets as W

    from ..widgets import FunctionView

    controls = {
        "num_steps": W.SelectionSlider(
            options=[5, 10, 20, 50], value=10, description="ODE steps N", continuous_update=False
        ),
        "method": W.ToggleButtons(options=["euler", "heun"], value="euler", description="solver"),
        "coords": W.ToggleButtons(options=["rho", "t"], value="rho", description="coordinates"),
        "grid": W.ToggleButtons(
            options=[("log ρ", "log_rho"), ("time", "time"), ("ρ", "rho")], value="log_rho", description="grid"
        ),
        "seed": W.IntSlider(value=0, min=0, max=20, description="seed", continuous_update=False),
    }
    return FunctionView(
        controls,
        lambda **v: fidelity_preview(model, **v),
        render_fidelity,
        title="Gradients through the sampler: continuous vs discrete adjoint vs autograd",
    )
