"""What the network sees and what it must produce, for each task.

Every task ends in an RGB prediction in [0, 1] units, so the loss (MSE on RGB) and every
reported metric mean the same thing across tasks:
  reconstruct:         RGB -> network -> RGB
  colorize, rgb:       luma Y -> network -> RGB
  colorize, ycbcr/lab: luma Y -> network -> chrominance, merged with the given Y -> RGB
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from cae.core.color import merge_chroma
from cae.core.config import RunConfig
from cae.core.data import luma


@functools.lru_cache(maxsize=16)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(-mean/std, 1/std) as (1, C, 1, 1) tensors, made once per device and dtype."""
    with torch.inference_mode(False):  # cached tensors are used in training too
        m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
        return (-m / s).to(device, dtype), (1 / s).to(device, dtype)


@dataclass
class Task:
    """The mapping from an RGB batch to the network's input and from its output back to RGB."""

    kind: str = "reconstruct"
    target: str = "rgb"
    mean: tuple[float, ...] = ()  # input standardization (empty: inputs stay in [0, 1])
    std: tuple[float, ...] = ()

    @classmethod
    def from_config(cls, cfg: RunConfig, mean: list[float] | None = None, std: list[float] | None = None) -> "Task":
        return cls(cfg.task, cfg.target, tuple(mean or ()), tuple(std or ()))

    @property
    def in_channels(self) -> int:
        return 3 if self.kind == "reconstruct" else 1

    @property
    def out_channels(self) -> int:
        return 3 if self.target == "rgb" else 2

    @property
    def colour(self) -> bool:
        return self.kind == "colorize"

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.mean:
            return x
        # (x - m) / s as x * (1/s) + (-m/s): one pass over the batch instead of two
        shift, scale = _affine(self.mean, self.std, x.device, x.dtype)
        return torch.addcmul(shift, x, scale)

    def network_input(self, rgb: torch.Tensor) -> torch.Tensor:
        """The network's input for RGB images in [0, 1] (luma for colorization)."""
        return self._standardize(rgb if self.kind == "reconstruct" else luma(rgb))

    def predict_rgb(self, model: nn.Module, rgb: torch.Tensor, float32: bool = True) -> torch.Tensor:
        """The RGB prediction (not clamped) for RGB images in [0, 1]; `float32=False` leaves a
        reconstruction in the autocast dtype (the loss and metrics promote it themselves)."""
        x = self.network_input(rgb)
        if self.kind == "reconstruct":
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x)
        if self.target == "rgb":
            return out.float() if float32 else out
        out = out.float()
        return merge_chroma(luma(rgb), out, self.target)
