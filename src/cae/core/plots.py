"""PNG figures of a run: the error per epoch and image grids (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from cae.core.runs import atomic_write_bytes  # noqa: E402


def save_figure(fig: plt.Figure, path: Path, dpi: int = 110) -> None:
    """Write a figure as PNG atomically and close it."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


LOSS_LABELS = {"mse": "MSE (pixels in [0, 1])", "cross_entropy": "cross-entropy over the chroma bins (nats)"}


def plot_loss(rows: Sequence[dict], path: Path, title: str = "", val_label: str = "validation",
              loss: str = "mse") -> None:
    """The training loss (`loss`: 'mse' or 'cross_entropy', as metrics.csv's train_loss holds it)
    and the validation MSE per epoch, log scale; a cross-entropy gets an axis of its own."""
    fig, ax = plt.subplots(figsize=(6, 4))
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
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n + 0.8, 1.2 * len(rows)), squeeze=False)
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
