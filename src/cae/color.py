"""Colour spaces for colorization: chrominance of RGB, and merging chrominance with luma.

Conversions come from kornia (differentiable, any device). The network always sees BT.601
luma Y (cae.data.luma) and predicts chrominance scaled to about [0, 1] for a sigmoid output:
  ycbcr: Cb, Cr (0.5-centred, in [0, 1]); merged with Y exactly (Y is BT.601 in both);
  lab:   a* and b* as a/256 + 0.5; merged with L* of the gray image (R = G = B = Y), since only
         the gray image is given at inference time.
"""

from __future__ import annotations

import kornia.color as kc
import torch

from cae.errors import CaeError

CHROMA_SPACES = ("ycbcr", "lab")


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
    lightness = kc.rgb_to_lab(y.clamp(0, 1).expand(-1, 3, -1, -1))[:, :1]
    return kc.lab_to_rgb(torch.cat([lightness, (chroma_ - 0.5) * 256.0], dim=1), clip=False)


def gray_rgb(y: torch.Tensor) -> torch.Tensor:
    """The gray image replicated in three channels (baseline (a))."""
    return y.expand(-1, 3, -1, -1)
