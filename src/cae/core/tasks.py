"""What the network sees and what it must produce, for each task.

Every task ends in an RGB prediction in [0, 1] units, so the loss (MSE on RGB) and every
reported metric mean the same thing across tasks:
  reconstruct:         RGB -> network -> RGB
  colorize, rgb:       luma Y -> network -> RGB
  colorize, ycbcr/lab: luma Y -> network -> chrominance, merged with the given Y -> RGB
A chroma classifier (color.decoder 'classes') trains on cross-entropy over (Cb, Cr) bins
instead (`class_loss`); in eval mode its network decodes the chroma itself, so prediction and
every metric are the same as for the other tasks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from cae.core.color import chroma, merge_chroma, soft_bins
from cae.core.config import RunConfig
from cae.core.data import luma
from cae.core.metrics import SoftTargetCrossEntropy


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
    bins: int = 0  # K of a K x K chroma classifier; 0: the network outputs the target itself

    @classmethod
    def from_config(cls, cfg: RunConfig, mean: list[float] | None = None, std: list[float] | None = None) -> "Task":
        bins = cfg.color.bins if cfg.task == "colorize" and cfg.color.decoder == "classes" else 0
        return cls(cfg.task, cfg.target, tuple(mean or ()), tuple(std or ()), bins)

    @property
    def in_channels(self) -> int:
        return 3 if self.kind == "reconstruct" else 1

    @property
    def out_channels(self) -> int:
        """The network's output channels (a classifier's: one logit per chroma bin)."""
        return self.bins ** 2 if self.bins else 3 if self.target == "rgb" else 2

    @property
    def pred_channels(self) -> int:
        """Channels of the decoded prediction: RGB, or the two chroma channels."""
        return 3 if self.target == "rgb" else 2

    @property
    def loss_name(self) -> str:
        """What training minimises, as metrics.csv's train_loss and test_metrics.json's `loss` name
        it: 'cross_entropy' for a chroma classifier, else 'mse' (on RGB in [0, 1])."""
        return "cross_entropy" if self.bins else "mse"

    @property
    def colour(self) -> bool:
        return self.kind == "colorize"

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.mean:
            return x
        # (x - m) / s as x * (1/s) + (-m/s): one pass over the batch instead of two
        shift, scale = _affine(self.mean, self.std, x.device, x.dtype)
        if x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
            n, c, h, w = x.shape
            # channels_last: the constants repeat every C values, and a broadcast along a contiguous
            # dim of 3 runs several times slower than a flat one. Each image is one flat vector of
            # H*W*C values, and the constants are laid out once in that order (exactly the same sums).
            rows = [t.view(1, 1, c).expand(h, w, c).reshape(-1) for t in (shift, scale)]
            flat = torch.addcmul(rows[0], x.permute(0, 2, 3, 1).reshape(n, -1), rows[1])
            return flat.view(n, h, w, c).permute(0, 3, 1, 2)
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

    def class_loss(self, model: nn.Module, images_u8: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of a chroma classifier (in training mode: it returns logits) against the
        soft bins of the true chroma, for uint8 RGB images; `weights` (Q,) rebalances the bins."""
        rgb = torch.div(images_u8, 255)
        # the softmax over the last dim of an (N,H,W,Q) view: the logits are channels_last, and the
        # softmax along their contiguous dim is several times faster than along dim 1 of NCHW
        logits = model(self.network_input(rgb)).float().permute(0, 2, 3, 1)
        # the logits may be coarser than the image: the target is the chroma averaged to their size
        target = nn.functional.adaptive_avg_pool2d(chroma(rgb), logits.shape[1:3])
        idx, w = (t.permute(0, 2, 3, 1) for t in soft_bins(target, self.bins))
        if weights is not None:  # a pixel's weight: its soft target's mean bin weight (Zhang et al. eq. 3)
            w = w * (weights[idx] * w).sum(dim=-1, keepdim=True)
        return SoftTargetCrossEntropy.apply(logits, idx, w)
