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
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from torch import nn

from cae.core.runs import atomic_write_bytes


def figure(**options) -> Figure:  # noqa: ANN003 - Figure's keyword arguments (figsize, ...)
    """A figure outside pyplot: nothing global changes, and it is freed with its last reference."""
    return Figure(**options)


def palette(name: str = "tab10") -> Colormap:
    """A named colormap (matplotlib's registry; `plt.get_cmap` without pyplot)."""
    return colormaps[name]


def save_figure(fig: Figure, path: Path, dpi: int = 110, **options) -> None:  # noqa: ANN003 - savefig's
    """Write a figure as PNG atomically (`bbox_inches="tight"` unless given)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **{"bbox_inches": "tight", **options})
    atomic_write_bytes(Path(path), buf.getvalue())


def plot_loss(rows: Sequence[dict], path: Path, title: str = "", val_label: str = "validation") -> None:
    """Training and validation MSE per epoch (log scale)."""
    fig = figure(figsize=(6, 4))
    ax = fig.subplots()
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["train_mse"] for r in rows], "o-", label="training (running mean over the epoch)")
    ax.plot(epochs, [r["val_mse"] for r in rows], "s-", label=val_label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (pixels in [0, 1])")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
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
