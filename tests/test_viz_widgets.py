import ipywidgets as W
import matplotlib.pyplot as plt
import pytest
import torch

from bytecourse.viz import animate_video, image_grid, plot_rows
from bytecourse.widgets import FunctionView
from bytecourse.worlds import make_motion, make_shapes


def test_image_grid_and_animation():
    b = make_shapes(5, seed=0)
    fig = image_grid(b.images, b.captions, ncols=3, boxes=[b.boxes[i][b.present[i]] for i in range(5)])
    assert len(fig.axes) == 6 and len(fig.axes[0].patches) == int(b.present[0].sum())
    plt.close(fig)
    m = make_motion(2, seed=0)
    html = animate_video(m.videos, m.captions, boxes=m.boxes)
    assert "<script" in html.data and "animation" in html.data.lower()
    with pytest.raises(ValueError):
        image_grid(torch.zeros(3, 8, 8))


def test_plot_rows_draws_every_metric():
    table = {
        "rows": [
            {"setting": s, "metrics": {"a": {"mean": v, "min": v, "max": v}}} for s, v in (("x", 0.2), ("y", 0.6))
        ]
    }
    ax = plot_rows(table, ["a"])
    assert len(ax.lines) >= 1
    plt.close("all")


def test_function_view_pattern():
    calls = []
    view = FunctionView(
        {"k": W.IntSlider(value=1, min=0, max=5)}, lambda k: calls.append(k) or k * 2, lambda r: print(r)
    )
    assert view.refresh() == 2 and view.calls == 1
    view.controls["k"].value = 4  # a learner moves the slider
    assert view.result == 8 and calls == [1, 4]

    def bad(k):
        raise ValueError(f"k={k} is not allowed")

    failing = FunctionView({"k": W.IntSlider(value=1)}, bad, print)
    failing.refresh()
    assert "not allowed" in failing.status.value and failing.result is None
