"""Plotting: image grids, box overlays, inline video animations, evaluation tables."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib import animation
from matplotlib.patches import Rectangle

__all__ = ["animate_video", "draw_boxes", "image_grid", "plot_rows"]


def _hwc(img: torch.Tensor):
    return img.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def draw_boxes(
    ax,
    boxes: torch.Tensor | Sequence,
    size: tuple[int, int],
    colours: Sequence | None = None,
    labels: Sequence[str] | None = None,
    style: str = "-",
    linewidth: float = 1.5,
) -> None:
    """Draw normalised (x0, y0, x1, y1) boxes on an axis showing an image of ``size = (H, W)``."""
    h, w = size
    for i, b in enumerate(boxes):
        x0, y0, x1, y1 = [float(v) for v in b]
        col = colours[i] if colours is not None else "white"
        ax.add_patch(
            Rectangle(
                (x0 * w - 0.5, y0 * h - 0.5),
                (x1 - x0) * w,
                (y1 - y0) * h,
                fill=False,
                edgecolor=col,
                linewidth=linewidth,
                linestyle=style,
            )
        )
        if labels is not None:
            ax.text(x0 * w - 0.5, y0 * h - 1.0, labels[i], color=col, fontsize=6, va="bottom")


def image_grid(
    images: torch.Tensor,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    scale: float = 1.6,
    boxes: Sequence | None = None,
    box_colours: Sequence | None = None,
    suptitle: str | None = None,
):
    """A grid of ``(B, 3, H, W)`` images in [0, 1]; optional per-image titles and box lists. Returns the figure."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    n = images.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(scale * ncols, scale * nrows + (0.3 if suptitle else 0)), squeeze=False
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(_hwc(images[i]), interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
        if boxes is not None and len(boxes[i]):
            draw_boxes(ax, boxes[i], images.shape[-2:], box_colours[i] if box_colours else None)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def animate_video(
    videos: torch.Tensor,
    titles: Sequence[str] | None = None,
    boxes: torch.Tensor | None = None,
    interval: int = 250,
    scale: float = 2.0,
    box_colours: Sequence | None = None,
    frame_titles: Sequence[str] | None = None,
):
    """An inline HTML animation (``IPython.display.HTML``) of ``(T,3,H,W)`` or ``(B,T,3,H,W)`` clips,
    optionally with per-frame boxes ``(B,T,K,4)`` (zero boxes are skipped) drawn in ``box_colours`` (one per
    K), and a suptitle per frame (``frame_titles``)."""
    from IPython.display import HTML

    if videos.dim() == 4:
        videos = videos[None]
        boxes = None if boxes is None else boxes[None]
    b, frames = videos.shape[:2]
    fig, axes = plt.subplots(1, b, figsize=(scale * b, scale + 0.3), squeeze=False)
    ims = []
    for i, ax in enumerate(axes[0]):
        ax.axis("off")
        ims.append(ax.imshow(_hwc(videos[i, 0]), interpolation="nearest"))
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)

    def update(f):
        for i, ax in enumerate(axes[0]):
            ims[i].set_data(_hwc(videos[i, f]))
            for p in list(ax.patches):
                p.remove()
            if boxes is not None:
                bx = boxes[i, f]
                keep = (bx[:, 2:] > bx[:, :2]).all(-1)
                cols = [c for c, k in zip(box_colours, keep.tolist()) if k] if box_colours is not None else None
                draw_boxes(ax, bx[keep], videos.shape[-2:], cols)
        if frame_titles is not None:
            fig.suptitle(frame_titles[f], fontsize=8)
        return ims

    anim = animation.FuncAnimation(fig, update, frames=frames, interval=interval)
    html = HTML(anim.to_jshtml())
    plt.close(fig)
    return html


def plot_rows(
    table: dict,
    metrics: Sequence[str],
    x: Sequence[float] | None = None,
    xlabel: str = "",
    ax=None,
    title: str | None = None,
    logx: bool = False,
):
    """Plot a table's metrics (mean with min–max bars over seeds) against its rows."""
    rows = table["rows"]
    xs = list(x) if x is not None else list(range(len(rows)))
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3))
    for m in metrics:
        mean = [r["metrics"][m]["mean"] for r in rows]
        lo = [r["metrics"][m]["mean"] - r["metrics"][m]["min"] for r in rows]
        hi = [r["metrics"][m]["max"] - r["metrics"][m]["mean"] for r in rows]
        ax.errorbar(xs, mean, yerr=[lo, hi], marker="o", capsize=3, label=m)
    if x is None:
        ax.set_xticks(xs, [r["setting"] for r in rows], rotation=30, ha="right", fontsize=7)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return ax
