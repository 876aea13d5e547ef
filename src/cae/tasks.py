"""What the network sees and what it must produce, for each task.

Every task ends in an RGB prediction in [0, 1] units, so the loss (MSE on RGB) and every
reported metric mean the same thing across tasks:
  reconstruct:         RGB -> network -> RGB
  colorize, rgb:       luma Y -> network -> RGB
  colorize, ycbcr/lab: luma Y -> network -> chrominance, merged with the given Y -> RGB
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cae.color import merge_chroma
from cae.config import RunConfig
from cae.data import luma


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
        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - m) / s

    def network_input(self, rgb: torch.Tensor) -> torch.Tensor:
        """The network's input for RGB images in [0, 1] (luma for colorization)."""
        return self._standardize(rgb if self.kind == "reconstruct" else luma(rgb))

    def predict_rgb(self, model: nn.Module, rgb: torch.Tensor) -> torch.Tensor:
        """The RGB prediction (not clamped) for RGB images in [0, 1]."""
        x = self.network_input(rgb)
        if self.kind == "reconstruct":
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x).float()
        if self.target == "rgb":
            return out
        return merge_chroma(luma(rgb), out, self.target)
