"""Noticing a run that became unstable, from its per-epoch figures alone.

A one-cycle run lowers its error epoch after epoch. Near the peak learning rate one step can throw
the weights out of their basin (where it happens depends on the seed and on the CPU's rounding);
the error then jumps and often stays up, or the output collapses toward the mean image. The rule
reads only the rows of metrics.csv, so the trainer, the studies and any reader of an old run folder
find the same epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# An epoch's training loss this many times the lowest of the epochs before it, or its validation
# error this many times theirs, is a jump: healthy one-cycle runs do not rise by a fifth between
# epochs (their per-epoch errors fall or stay within a few percent).
TRAIN_RISE = 1.2
VAL_RISE = 1.5
# a validation error this share of the mean image's: the output has collapsed toward that image
NEAR_MEAN_IMAGE = 0.8


@dataclass(frozen=True)
class Instability:
    """Where and how a run became unstable."""

    epoch: int
    what: str  # 'training loss', 'validation error' or 'collapse'
    reference: float  # the lowest before the jump, or the mean image's error for a collapse
    value: float

    def text(self) -> str:
        if self.what == "collapse":
            return (f"epoch {self.epoch}: the validation error {self.value:.5f} is {self.value / self.reference:.2f}x "
                    f"the mean image's ({self.reference:.5f}): the output is no better than a constant image")
        return (f"epoch {self.epoch}: the {self.what} rose to {self.value:.5f}, {self.value / self.reference:.2f}x "
                f"its lowest before ({self.reference:.5f})")


def find_instability(rows: list[dict], mean_image_mse: float | None = None) -> Instability | None:
    """The first epoch at which the run became unstable (`rows` as `runs.read_metrics_csv` gives
    them: `train_loss` is MSE, or cross-entropy for a chroma classifier), or None.

    `mean_image_mse`: the validation error of the constant mean image, for models that predict the
    image itself; a later epoch that scores near it has collapsed (the first may still be learning)."""
    for i, row in enumerate(rows[1:], 1):
        if mean_image_mse and row["val_mse"] >= NEAR_MEAN_IMAGE * mean_image_mse:
            return Instability(int(row["epoch"]), "collapse", mean_image_mse, row["val_mse"])
        lowest_train = min(r["train_loss"] for r in rows[:i])
        if row["train_loss"] > TRAIN_RISE * lowest_train:
            return Instability(int(row["epoch"]), "training loss", lowest_train, row["train_loss"])
        lowest_val = min(r["val_mse"] for r in rows[:i])
        if row["val_mse"] > VAL_RISE * lowest_val:
            return Instability(int(row["epoch"]), "validation error", lowest_val, row["val_mse"])
    return None


def mean_image_mse(train_u8: torch.Tensor, val_u8: torch.Tensor, chunk: int = 4096) -> float:
    """The MSE, in [0, 1] pixel units, of predicting every validation image by the training split's
    mean image (uint8 images, any device)."""
    total = torch.zeros(train_u8.shape[1:], dtype=torch.float64, device=train_u8.device)
    for i in range(0, len(train_u8), chunk):
        total += train_u8[i:i + chunk].double().sum(0)
    mean = total / (255 * len(train_u8))
    sq = sum(float((val_u8[i:i + chunk].double() / 255 - mean).square().sum()) for i in range(0, len(val_u8), chunk))
    return sq / val_u8.numel()
