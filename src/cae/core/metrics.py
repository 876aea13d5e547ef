"""Image metrics on RGB in [0, 1]: MSE, PSNR, SSIM, chrominance error, colorfulness; and the
chroma classifier's loss, cross-entropy against soft targets.

Metrics are accumulated as sums over images (`MetricSums`), so a split's figure is exact
however it is batched or sharded across processes (sums are all-reduced, then divided)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import kornia.metrics
import torch

from cae.core.color import chroma

SSIM_WINDOW = 7  # 11 (the usual) is a third of a 32-pixel side; 7 keeps the window local


def squared_error_sum(pred: torch.Tensor, target: torch.Tensor, clamp: bool = False) -> torch.Tensor:
    """sum((pred - target)^2) as a float64 tensor, for a float target in [0, 1]; `clamp` clamps
    `pred` to [0, 1] first.

    The difference is float32 by type promotion (a bfloat16 prediction needs no cast of its
    own); its square sum is one float64 dot product over the values in memory order. A float32
    dot over a batch of 1,000 images is off by 1e-5 to 5e-5 relative, by an amount that depends
    on the CPU's BLAS kernel and the thread count; in float64 each square is exact and the sum
    good to ~1e-13, so the sum of given predictions is the same on every machine.
    """
    d = ((pred.clamp(0, 1) if clamp else pred) - target).double()
    cl = d.dim() == 4 and d.is_contiguous(memory_format=torch.channels_last)
    flat = (d.permute(0, 2, 3, 1) if cl else d).reshape(-1)
    return torch.dot(flat, flat)


class SoftTargetCrossEntropy(torch.autograd.Function):
    """Mean over pixels of -sum_k w_k log softmax(z)[idx_k]: cross-entropy of logits z (..., Q)
    against soft targets given sparsely, K bins per pixel (idx, w: (..., K)).

    The backward is written out, d/dz = softmax(z) * sum_k w_k - (w scattered to idx): one exp
    over the logits. Autograd's own route zero-fills a dense gradient of the gather, scatters
    into it, then runs log_softmax's backward: three passes over Q values a pixel, which made
    most of a U-Net colorizer's training step."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        logp = torch.log_softmax(logits, dim=-1)
        ctx.save_for_backward(logp, idx, w)
        return -(torch.gather(logp, -1, idx) * w).sum(dim=-1).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:  # noqa: ANN001
        logp, idx, w = ctx.saved_tensors
        scale = grad / w[..., 0].numel()  # the mean over pixels
        g = torch.exp(logp).mul_(w.sum(dim=-1, keepdim=True) * scale)
        return g.scatter_add_(-1, idx, w * -scale), None, None


def psnr_from_mse(m: float) -> float:
    """PSNR in dB for data range 1: 10 log10(1 / MSE) of the split's mean MSE."""
    return float("inf") if m <= 0 else 10.0 * math.log10(1.0 / m)


def ssim_per_image(pred: torch.Tensor, target: torch.Tensor, window: int = SSIM_WINDOW) -> torch.Tensor:
    """Mean SSIM of each image (N,), Gaussian window (sigma 1.5), data range 1."""
    # both in one memory format (NCHW): the fast path's RGB output is NCHW, its batches
    # channels_last, and kornia's element-wise steps on a mix of the two run ~3x slower
    pred, target = pred.float().clamp(0, 1).contiguous(), target.float().contiguous()
    s = kornia.metrics.ssim(pred, target, window, max_val=1.0, padding="valid")
    return s.mean(dim=(1, 2, 3))


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler and Suesstrunk (2003) colorfulness of each image (N,), on the 0-255 scale.

    rg = R - G, yb = (R + G)/2 - B; M = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2).
    A gray image scores 0; a desaturated colorizer scores far below the ground truth.
    """
    x = rgb.float().clamp(0, 1) * 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    std = torch.sqrt(rg.var(dim=(1, 2), unbiased=False) + yb.var(dim=(1, 2), unbiased=False))
    mean = torch.sqrt(rg.mean(dim=(1, 2)) ** 2 + yb.mean(dim=(1, 2)) ** 2)
    return std + 0.3 * mean


@dataclass
class MetricSums:
    """Running sums over images; `result()` gives the split's metrics."""

    colour: bool = False  # also chroma error and colorfulness (colorization)
    full: bool = True  # False: MSE only (validation each epoch; SSIM is the costly part)
    sums: dict[str, float] = field(default_factory=dict)

    KEYS = ("sse", "values", "images", "ssim", "chroma_sse", "chroma_values", "colorfulness", "colorfulness_truth")

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of RGB predictions (float32 or bfloat16; clamped to [0, 1] here) and
        targets (float in [0, 1], or uint8 images as stored); every sum is float32 or wider
        (the squared error float64)."""
        s = self.sums
        # made [0, 1] float32 once, for every sum (uint8 in one pass, the same values as .float() / 255)
        target = torch.div(target, 255) if target.dtype == torch.uint8 else target.float()
        s["sse"] = s.get("sse", 0.0) + squared_error_sum(pred, target, clamp=True).item()
        s["values"] = s.get("values", 0.0) + pred.numel()
        s["images"] = s.get("images", 0.0) + pred.shape[0]
        if not self.full:
            return
        pred = pred.clamp(0, 1).float()  # exact in any dtype
        s["ssim"] = s.get("ssim", 0.0) + ssim_per_image(pred, target).sum().item()
        if self.colour:
            cp, ct = chroma(pred), chroma(target)
            s["chroma_sse"] = s.get("chroma_sse", 0.0) + torch.sum((cp - ct) ** 2).item()
            s["chroma_values"] = s.get("chroma_values", 0.0) + cp.numel()
            s["colorfulness"] = s.get("colorfulness", 0.0) + colorfulness(pred).sum().item()
            s["colorfulness_truth"] = s.get("colorfulness_truth", 0.0) + colorfulness(target).sum().item()

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.sums.get(k, 0.0) for k in self.KEYS], dtype=torch.float64)

    def load_tensor(self, t: torch.Tensor) -> None:
        self.sums = {k: float(v) for k, v in zip(self.KEYS, t.tolist())}

    def result(self) -> dict[str, float]:
        s = self.sums
        m = s["sse"] / s["values"]
        out = {"mse": m, "psnr": psnr_from_mse(m), "ssim": s.get("ssim", 0.0) / s["images"], "images": int(s["images"])}
        if self.colour:
            out["chroma_mse"] = s["chroma_sse"] / s["chroma_values"]
            out["colorfulness"] = s["colorfulness"] / s["images"]
            out["colorfulness_truth"] = s["colorfulness_truth"] / s["images"]
        return out
