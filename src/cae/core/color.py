"""Colour spaces for colorization: chrominance of RGB, and merging chrominance with luma.

Conversions come from kornia (differentiable, any device). The network always sees BT.601
luma Y (cae.core.data.luma) and predicts chrominance scaled to about [0, 1] for a sigmoid output:
  ycbcr: Cb, Cr (0.5-centred, in [0, 1]); merged with Y exactly (Y is BT.601 in both);
  lab:   a* and b* as a/256 + 0.5; merged with the L* that gives the colour the given luma Y
         (found by bisection), since only the gray image is given at inference time.
"""

from __future__ import annotations

import kornia.color as kc
import torch

from cae.core.data import luma
from cae.errors import CaeError

CHROMA_SPACES = ("ycbcr", "lab")
# the chroma classifier's bins span this square of (Cb, Cr): 99.9% of CIFAR-10's training
# pixels fall inside it (Cb 0.17-0.77, Cr 0.20-0.84); the rare outliers are clamped onto its edge
BIN_RANGE = (0.125, 0.875)


def _check(space: str) -> None:
    if space not in CHROMA_SPACES:
        raise CaeError(f"unknown chroma space {space!r}; use one of {', '.join(CHROMA_SPACES)}")


def chroma(rgb: torch.Tensor, space: str = "ycbcr") -> torch.Tensor:
    """The two chrominance channels (N,2,H,W), about [0, 1], of RGB (N,3,H,W) in [0, 1]."""
    _check(space)
    if space == "ycbcr":
        return kc.rgb_to_ycbcr(rgb)[:, 1:]
    return kc.rgb_to_lab(rgb.clamp(0, 1))[:, 1:] / 256.0 + 0.5


def merge_chroma(y: torch.Tensor, chroma_: torch.Tensor, space: str = "ycbcr") -> torch.Tensor:
    """RGB (not clamped) from given luma Y (N,1,H,W) and chrominance (N,2,H,W) of `space`."""
    _check(space)
    if space == "ycbcr":
        return kc.ycbcr_to_rgb(torch.cat([y, chroma_], dim=1))
    ab = (chroma_ - 0.5) * 256.0
    lightness = _lightness_for_luma(y, ab)
    return kc.lab_to_rgb(torch.cat([lightness, ab], dim=1), clip=False)


def _lightness_for_luma(y: torch.Tensor, ab: torch.Tensor, iters: int = 16) -> torch.Tensor:
    """The L* whose colour (L*, a*, b*) has BT.601 luma `y`, found by bisection per pixel.

    CIE L* is not BT.601 luma: a colour and the gray of the same Y have different L*, so
    merging a*b* with the gray image's L* would change the luminance given to the colorizer
    (MSE 0.02 on random colours). Luma grows with L* for fixed a*b*, so bisection over
    [0, 100] finds it; 16 halvings leave 0.0015 L*. No gradient flows through the search
    (the loss still reaches a*b* through the final conversion)."""
    with torch.no_grad():
        lo = torch.zeros_like(y)
        hi = torch.full_like(y, 100.0)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            rgb = kc.lab_to_rgb(torch.cat([mid, ab.detach()], dim=1), clip=False)
            bright = luma(rgb) > y
            hi = torch.where(bright, mid, hi)
            lo = torch.where(bright, lo, mid)
    return 0.5 * (lo + hi)


def gray_rgb(y: torch.Tensor) -> torch.Tensor:
    """The gray image replicated in three channels (baseline (a))."""
    return y.expand(-1, 3, -1, -1)


def chroma_bins(k: int) -> torch.Tensor:
    """The (k*k, 2) (Cb, Cr) centres of a k x k grid over BIN_RANGE, Cb-major (bin = i*k + j)."""
    axis = torch.linspace(*BIN_RANGE, k)
    cb, cr = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([cb.reshape(-1), cr.reshape(-1)], dim=1)


def soft_bins(cbcr: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft class targets of chroma (N,2,H,W) on the grid of `chroma_bins(k)`: the 4 bins around
    each value (N,4,H,W) and bilinear weights (N,4,H,W) summing to 1.

    Bilinear rather than Zhang et al.'s Gaussian over 5 neighbours: the weighted mean of the
    4 centres is the value itself, so the decoded mean (T = 1) is unbiased by the quantization."""
    lo, hi = BIN_RANGE
    pos = (cbcr.float().clamp(lo, hi) - lo) * ((k - 1) / (hi - lo))
    i0 = pos.floor().clamp(max=k - 2)
    f = pos - i0
    i0 = i0.long()
    (b0, r0), (fb, fr) = i0.unbind(1), f.unbind(1)
    idx = torch.stack([b0 * k + r0, b0 * k + r0 + 1, (b0 + 1) * k + r0, (b0 + 1) * k + r0 + 1], dim=1)
    w = torch.stack([(1 - fb) * (1 - fr), (1 - fb) * fr, fb * (1 - fr), fb * fr], dim=1)
    return idx, w


def bin_frequencies(cbcr: torch.Tensor, k: int) -> torch.Tensor:
    """The share (k*k,) of the soft bins of chroma (N,2,H,W) falling in each bin."""
    idx, w = soft_bins(cbcr, k)
    counts = torch.zeros(k * k, dtype=torch.float64, device=idx.device)
    counts.index_add_(0, idx.reshape(-1), w.reshape(-1).double())
    return (counts / counts.sum()).float()


def rebalance_weights(freq: torch.Tensor, strength: float) -> torch.Tensor:
    """Zhang et al.'s class weights: 1 / ((1 - s)/Q + s p), scaled so the mean weight under p is 1
    (rare, saturated colours then count more in the loss than their frequency says)."""
    w = 1.0 / ((1 - strength) / len(freq) + strength * freq)
    return w / (freq * w).sum()
