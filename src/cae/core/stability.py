"""Noticing a run that became unstable, from its per-epoch figures alone.

A one-cycle run lowers its error epoch after epoch. Near the peak learning rate one step can throw
the weights out of their basin (where it happens depends on the seed and on the CPU's rounding);
the error then jumps and may stay up, or the output collapses toward the mean image. The rule
reads only the rows of metrics.csv, so the trainer, the studies and any reader of an old run folder
find the same epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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

    epoch: int  # the epoch that showed it: a jump's second epoch up, or the run's last
    what: str  # 'training loss', 'validation error' or 'collapse'
    reference: float  # the lowest before the jump, or the mean image's error for a collapse
    value: float  # the jump's (or the collapsed epoch's) figure
    since: int  # the epoch the jump began

    def text(self) -> str:
        if self.what == "collapse":
            return (f"epoch {self.epoch}: the validation error {self.value:.5f} is {self.value / self.reference:.2f}x "
                    f"the mean image's ({self.reference:.5f}): the output is no better than a constant image")
        rose = (f"epoch {self.since}: the {self.what} rose to {self.value:.5f}, {self.value / self.reference:.2f}x "
                f"its lowest before ({self.reference:.5f})")
        return rose + (f", and stayed up in epoch {self.epoch}" if self.epoch > self.since else
                       ", in the run's last epoch")


def find_jump(before: list[dict], row: dict) -> Instability | None:
    """`row` against the lowest of the epochs `before` it: a jump, or None."""
    lowest = min(r["train_loss"] for r in before)
    if row["train_loss"] > TRAIN_RISE * lowest:
        return Instability(int(row["epoch"]), "training loss", lowest, row["train_loss"], int(row["epoch"]))
    lowest = min(r["val_mse"] for r in before)
    if row["val_mse"] > VAL_RISE * lowest:
        return Instability(int(row["epoch"]), "validation error", lowest, row["val_mse"], int(row["epoch"]))
    return None


def find_instability(rows: list[dict], mean_image_mse: float | None = None, finished: bool = True
                     ) -> Instability | None:
    """The epoch at which the run showed it had become unstable (`rows` as `runs.read_metrics_csv`
    gives them: `train_loss` is MSE, or cross-entropy for a chroma classifier), or None.

    A jump that the next epoch recovers from is a spike the run survived; one that stays up in the
    next epoch too, or comes in the last epoch of a `finished` run, is instability. So is a later
    epoch scoring near `mean_image_mse`, the validation error of the constant mean image (for
    models that predict the image itself; the first epoch may still be learning)."""
    for i in range(1, len(rows)):
        if mean_image_mse and rows[i]["val_mse"] >= NEAR_MEAN_IMAGE * mean_image_mse:
            return Instability(int(rows[i]["epoch"]), "collapse", mean_image_mse, rows[i]["val_mse"],
                               int(rows[i]["epoch"]))
        jump = find_jump(rows[:i], rows[i])
        if jump is None:
            continue
        if i + 1 < len(rows):
            if find_jump(rows[:i], rows[i + 1]):  # still up against the same lowest
                return replace(jump, epoch=int(rows[i + 1]["epoch"]))
        elif finished:
            return jump
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
