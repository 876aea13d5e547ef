"""What the network sees and what it must produce, for each task.

Every task ends in an RGB prediction in [0, 1] units, so the loss (MSE on RGB) and every
reported metric mean the same thing across tasks:
  reconstruct:         RGB -> network -> RGB
  colorize, rgb:       luma Y -> network -> RGB
  colorize, ycbcr/lab: luma Y -> network -> chrominance, merged with the given Y -> RGB
A chroma classifier (color.decoder 'classes') trains on cross-entropy over (Cb, Cr) bins
instead (`class_loss`); in eval mode its network decodes the chroma itself, so prediction and
every metric are the same as for the other tasks.

A guided colorizer (color.hints) also sees a guide: hints as three channels after the luma,
(Cb - 0.5, Cr - 0.5) where a hint falls (0 elsewhere) and the mask (1 there), as in Zhang et al.
2017. Training draws the hints from the truth (`random_guide`); without a guide (validation,
test, a photo without hints) the channels are zero: the automatic mode.
"""

from __future__ import annotations

import functools
import math
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
    hints: bool = False  # a guided colorizer: the input has GUIDE_CHANNELS after the luma
    hint_free: float = 0.25  # training: the share of images given no hints
    max_hints: int = 64  # training: at most this many hints in an image

    @classmethod
    def from_config(cls, cfg: RunConfig, mean: list[float] | None = None, std: list[float] | None = None) -> "Task":
        c = cfg.color
        bins = c.bins if cfg.task == "colorize" and c.decoder == "classes" else 0
        return cls(cfg.task, cfg.target, tuple(mean or ()), tuple(std or ()), bins, c.hints, c.hint_free, c.max_hints)

    @property
    def in_channels(self) -> int:
        return 3 if self.kind == "reconstruct" else 1 + GUIDE_CHANNELS * self.hints

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

    def network_input(self, rgb: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """The network's input for RGB images in [0, 1] (luma for colorization), followed for a
        guided colorizer by its `guide` (N,3,H,W) (`guide_of`; None: no hints)."""
        x = self._standardize(rgb if self.kind == "reconstruct" else luma(rgb))
        if not self.hints:
            return x
        if guide is None:
            return torch.cat([x, x.new_zeros(x.shape[0], GUIDE_CHANNELS, *x.shape[2:])], dim=1)
        return torch.cat([x, guide.to(x.device, x.dtype)], dim=1)

    def training_guide(self, rgb: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
        """The hints a guided colorizer trains on for a batch (`random_guide`); None for others."""
        return random_guide(rgb, gen, self.hint_free, self.max_hints) if self.hints else None

    def predict_rgb(self, model: nn.Module, rgb: torch.Tensor, float32: bool = True,
                    guide: torch.Tensor | None = None) -> torch.Tensor:
        """The RGB prediction (not clamped) for RGB images in [0, 1]; `float32=False` leaves a
        reconstruction in the autocast dtype (the loss and metrics promote it themselves)."""
        x = self.network_input(rgb, guide)
        if self.kind == "reconstruct":
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x)
        if self.target == "rgb":
            return out.float() if float32 else out
        out = out.float()
        return merge_chroma(luma(rgb), out, self.target)

    def class_loss(self, model: nn.Module, images_u8: torch.Tensor, weights: torch.Tensor | None = None,
                   gen: torch.Generator | None = None) -> torch.Tensor:
        """Cross-entropy of a chroma classifier (in training mode: it returns logits) against the
        soft bins of the true chroma, for uint8 RGB images; `weights` (Q,) rebalances the bins;
        a guided colorizer is given hints drawn with `gen` (`training_guide`)."""
        rgb = torch.div(images_u8, 255)
        guide = self.training_guide(rgb, gen) if gen is not None else None
        # the softmax over the last dim of an (N,H,W,Q) view: the logits are channels_last, and the
        # softmax along their contiguous dim is several times faster than along dim 1 of NCHW
        logits = model(self.network_input(rgb, guide)).float().permute(0, 2, 3, 1)
        # the logits may be coarser than the image: the target is the chroma averaged to their size
        target = nn.functional.adaptive_avg_pool2d(chroma(rgb), logits.shape[1:3])
        idx, w = (t.permute(0, 2, 3, 1) for t in soft_bins(target, self.bins))
        if weights is not None:  # a pixel's weight: its soft target's mean bin weight (Zhang et al. eq. 3)
            w = w * (weights[idx] * w).sum(dim=-1, keepdim=True)
        return SoftTargetCrossEntropy.apply(logits, idx, w)


GUIDE_CHANNELS = 3  # (Cb - 0.5) * mask, (Cr - 0.5) * mask, mask
HINT_PATCHES = (1, 3, 5, 7)  # a simulated hint is the mean chroma of a square this wide around its pixel


def guide_of(cmap: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A guided colorizer's guide (N,3,H,W) from a chroma map (N,2,H,W), BT.601 (Cb, Cr) with 0.5
    neutral, and a mask (N,1,H,W), 1 where a hint falls (`cae.core.photo.hint_maps` draws them)."""
    return torch.cat([(cmap - 0.5) * mask, mask], dim=1)


def random_guide(rgb: torch.Tensor, gen: torch.Generator, free: float, most: int) -> torch.Tensor:
    """Simulated hints (`guide_of`) for RGB images (N,3,H,W) in [0, 1]: a share `free` of the images
    gets none, each other a log-uniform number from 1 to `most` at uniformly random pixels (one may
    repeat), each revealing the mean true chroma of a square around it, of a width drawn per image
    from HINT_PATCHES (a user's click gives the colour of a region, not of one pixel). `gen` (a CPU
    generator) makes the draw reproducible."""
    n, _, h, w = rgb.shape
    dev = rgb.device
    u = torch.rand(n, 3, generator=gen)
    counts = torch.exp(u[:, 0] * math.log(most + 1)).floor().clamp(1, most)
    counts = torch.where(u[:, 1] < free, 0.0, counts).to(dev)
    pos = torch.randint(h * w, (n, most), generator=gen).to(dev)
    keep = (torch.arange(most, device=dev) < counts[:, None]).float()
    mask = torch.zeros(n, h * w, device=dev).scatter_reduce_(1, pos, keep, reduce="amax").view(n, 1, h, w)
    c = chroma(rgb.float())
    pick = (u[:, 2] * len(HINT_PATCHES)).long().clamp(max=len(HINT_PATCHES) - 1).to(dev).view(n, 1, 1, 1)
    means = torch.zeros_like(c)
    for i, k in enumerate(HINT_PATCHES):  # a few pooled copies of a 32x32 batch: cheap next to the network
        pooled = c if k == 1 else nn.functional.avg_pool2d(c, k, 1, k // 2, count_include_pad=False)
        means = torch.where(pick == i, pooled, means)
    return guide_of(means, mask)
