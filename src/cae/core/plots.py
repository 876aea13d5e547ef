"""PNG figures of a run: the error per epoch and image grids.

Figures are `matplotlib.figure.Figure` objects made without pyplot: they render to PNG whatever
the backend, and the backend is left alone, so training from a Jupyter notebook (inline backend)
or a GUI session does not lose the user's own plots, and no window opens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.text import Annotation
from torch import nn

from cae.core.runs import atomic_write_bytes


def figure(**options) -> Figure:  # noqa: ANN003 - Figure's keyword arguments (figsize, ...)
    """A figure outside pyplot: nothing global changes, and it is freed with its last reference.
    It draws on an Agg canvas of its own, so text can be measured before it is saved."""
    fig = Figure(**options)
    FigureCanvasAgg(fig)
    return fig


def palette(name: str = "tab10") -> Colormap:
    """A named colormap (matplotlib's registry; `plt.get_cmap` without pyplot)."""
    return colormaps[name]


def save_figure(fig: Figure, path: Path, dpi: int = 110, **options) -> None:  # noqa: ANN003 - savefig's
    """Write a figure as PNG atomically (`bbox_inches="tight"` unless given)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **{"bbox_inches": "tight", **options})
    atomic_write_bytes(Path(path), buf.getvalue())


LOSS_LABELS = {"mse": "MSE (pixels in [0, 1])", "cross_entropy": "cross-entropy over the chroma bins (nats)"}


def plot_loss(rows: Sequence[dict], path: Path, title: str = "", val_label: str = "validation",
              loss: str = "mse") -> None:
    """The training loss (`loss`: 'mse' or 'cross_entropy', as metrics.csv's train_loss holds it)
    and the validation MSE per epoch, log scale; a cross-entropy gets an axis of its own."""
    fig = figure(figsize=(6, 4))
    ax = fig.subplots()
    epochs = [r["epoch"] for r in rows]
    train_ax = ax if loss == "mse" else ax.twinx()
    lines = train_ax.plot(epochs, [r["train_loss"] for r in rows], "o-", color="C0",
                          label=f"training {'MSE' if loss == 'mse' else 'cross-entropy'} (running mean over the epoch)")
    lines += ax.plot(epochs, [r["val_mse"] for r in rows], "s-", color="C1", label=f"{val_label} MSE")
    ax.set_xlabel("epoch")
    ax.set_ylabel(LOSS_LABELS["mse"])
    if train_ax is not ax:
        train_ax.set_ylabel(f"training {LOSS_LABELS[loss]}")
        train_ax.set_yscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(lines, [line.get_label() for line in lines])
    if title:
        ax.set_title(title)
    save_figure(fig, path)


def save_grid(rows: Sequence[torch.Tensor], labels: Sequence[str], path: Path) -> None:
    """A grid of images: one row per tensor (N,C,H,W) in [0, 1], labelled on the left."""
    n = rows[0].shape[0]
    fig = figure(figsize=(1.1 * n + 0.8, 1.2 * len(rows)))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (imgs, label) in enumerate(zip(rows, labels)):
        imgs = imgs.detach().float().clamp(0, 1).cpu()
        if imgs.shape[1] == 1:
            imgs = imgs.expand(-1, 3, -1, -1)
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(np.ascontiguousarray(imgs[c].permute(1, 2, 0).numpy()), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    save_figure(fig, path)


def save_samples(model: nn.Module, images_u8: torch.Tensor, task, path: Path) -> None:  # noqa: ANN001
    """Test images and the model's output: original/reconstruction, or gray/prediction/truth."""
    from cae.core.data import luma

    device = next(model.parameters()).device
    was = model.training
    model.eval()
    with torch.inference_mode():
        rgb = images_u8.to(device).float().div(255)
        pred = task.predict_rgb(model, rgb).clamp(0, 1)
    model.train(was)
    if task.colour:
        save_grid([luma(rgb), pred, rgb], ["gray input", "prediction", "ground truth"], path)
    else:
        save_grid([rgb, pred], ["original", "reconstruction"], path)


LABEL_GAP = 4.0  # points between a point and its label, and kept between two labels
LABEL_FAN = 18.0  # points between a point and its label when the label had to move


def label_points(ax: Axes, xs: Sequence[float], ys: Sequence[float], names: Sequence[str],
                 fontsize: float = 7) -> list[Annotation]:
    """Name every point with a label that overlaps no other label: each starts beside its point
    (on its left when the right would leave the axes) and labels whose boxes collide are pushed
    apart vertically, a thin leader line joining a moved label to its point. Call it last, once
    the axes' scales, limits and size are final: it places the labels in pixels."""
    fig = ax.figure
    fig.canvas.draw()  # settles the autoscaled limits, so data -> pixels is final
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72  # pixels per point
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    probes = [ax.text(0, 0, n, fontsize=fontsize) for n in names]  # only to measure each label
    sizes = np.array([[b.width, b.height] for b in (t.get_window_extent(renderer) for t in probes)])
    for t in probes:
        t.remove()
    right_edge = ax.get_window_extent(renderer).x1
    left_side = pts[:, 0] + LABEL_GAP * px + sizes[:, 0] > right_edge
    sign = np.where(left_side, -1.0, 1.0)
    fanned = np.zeros(len(names), dtype=bool)  # labels set further out, so their leader lines show
    for _ in range(len(names) + 1):  # until no label moves that is not fanned out yet
        gap = np.where(fanned, LABEL_FAN, LABEL_GAP)
        lo = np.where(left_side, pts[:, 0] - gap * px - sizes[:, 0], pts[:, 0] + gap * px)
        y = _spread(lo, lo + sizes[:, 0], pts[:, 1].copy(), sizes[:, 1] + LABEL_GAP * px)
        moved = np.abs(y - pts[:, 1]) > sizes[:, 1] / 2
        if not (moved & ~fanned).any():
            break
        fanned |= moved
    texts = []
    for n, x, yd, s, g, y0, yy, m in zip(names, xs, ys, sign, gap, pts[:, 1], y, fanned | moved):
        line = {"arrowstyle": "-", "lw": 0.5, "color": "0.35", "shrinkA": 0, "shrinkB": 3,
                "relpos": (1.0, 0.5) if s < 0 else (0.0, 0.5)}
        texts.append(ax.annotate(n, (x, yd), xytext=(s * g, (yy - y0) / px),
                                 textcoords="offset points", fontsize=fontsize, va="center",
                                 ha="right" if s < 0 else "left", annotation_clip=False,
                                 arrowprops=line if m else None))
    return texts


def _spread(x0: np.ndarray, x1: np.ndarray, y: np.ndarray, h: np.ndarray, rounds: int = 2000) -> np.ndarray:
    """Centres `y` moved so that no two boxes [x0, x1] x [y -+ h/2] whose x-ranges meet overlap:
    every overlapping pair is pushed apart by half its overlap each, round after round, until none
    is left (the boxes only move vertically, each about as far as its crowd needs)."""
    for _ in range(rounds):
        moved = False
        order = np.argsort(y, kind="stable")
        for a, i in enumerate(order):
            for j in order[a + 1:]:
                if x1[i] <= x0[j] or x1[j] <= x0[i]:
                    continue
                overlap = (h[i] + h[j]) / 2 - (y[j] - y[i])
                if overlap > 1e-6:
                    y[i] -= overlap / 2 + 1e-3
                    y[j] += overlap / 2 + 1e-3
                    moved = True
        if not moved:
            break
    return y
