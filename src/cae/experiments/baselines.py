"""Colorization's baselines, no training: (a) the gray image itself, (b) the gray image with the
training split's mean chrominance. A colorizer that does not beat (b) has learned no more than the
average color. Apart from the study (cae.experiments.colorization) so the public API (`import
cae`) can offer `compute_baselines` without importing the study, which trains through `cae`.
"""

from __future__ import annotations

import torch

from cae.core.color import chroma, gray_rgb, merge_chroma
from cae.core.data import luma
from cae.core.metrics import MetricSums

# label of each baseline in the tables
BASELINE_NAMES = {"a": "baseline (a) gray", "b": "baseline (b) gray + mean chroma"}


def mean_chroma(images_u8: torch.Tensor, batch: int = 5000) -> torch.Tensor:
    """Mean YCbCr chrominance (Cb, Cr) of uint8 RGB images, shape (2,)."""
    total = torch.zeros(2, dtype=torch.float64)
    for i in range(0, len(images_u8), batch):
        c = chroma(images_u8[i:i + batch].float().div(255), "ycbcr")
        total += c.double().sum(dim=(0, 2, 3))
    return (total / (len(images_u8) * images_u8.shape[2] * images_u8.shape[3])).float()


def baseline_predictions(rgb: torch.Tensor, mean_cbcr: torch.Tensor) -> dict[str, torch.Tensor]:
    """RGB predictions of both baselines for RGB images in [0, 1] (only their luma is used)."""
    y = luma(rgb)
    c = mean_cbcr.to(rgb.dtype).view(1, 2, 1, 1).expand(len(rgb), -1, *rgb.shape[2:])
    return {"a": gray_rgb(y), "b": merge_chroma(y, c, "ycbcr")}


def compute_baselines(train_u8: torch.Tensor, test_u8: torch.Tensor, batch: int = 1000) -> dict[str, dict]:
    """Full colour metrics of baselines (a) and (b) on `test_u8`, (b) fitted on `train_u8`."""
    m = mean_chroma(train_u8)
    sums = {k: MetricSums(colour=True) for k in BASELINE_NAMES}
    for i in range(0, len(test_u8), batch):
        rgb = test_u8[i:i + batch].float().div(255)
        for k, pred in baseline_predictions(rgb, m).items():
            sums[k].add(pred, rgb)
    out = {k: s.result() for k, s in sums.items()}
    out["b"]["mean_cb"], out["b"]["mean_cr"] = float(m[0]), float(m[1])
    return out
