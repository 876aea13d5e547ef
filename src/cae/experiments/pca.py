"""The PCA baseline: the best *linear* code of k values, fitted on the training split.

One decomposition serves every k: the principal axes are the eigenvectors of the training
covariance (3072 x 3072 for CIFAR-10, float64, `torch.linalg.eigh`), or, when there are fewer
images than dimensions (smoke runs), derived from the eigenvectors of the n x n Gram matrix
(cheaper and exact). Reconstruction = project onto the top-k axes, add the mean back, clamp to [0, 1] (the
same clamp the networks' metrics apply), so PCA and CAE figures mean the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cae.core.device import torch_threads
from cae.core.metrics import MetricSums

CHUNK = 4096  # rows converted to float64 at a time: 4096 x 3072 x 8 B = 100 MB


@dataclass
class PcaFit:
    """Mean and principal axes (columns, by decreasing variance) of a data set."""

    mean: torch.Tensor  # (D,) float64
    components: torch.Tensor  # (D, m) float64, m = min(N, D)
    variances: torch.Tensor  # (m,) float64, decreasing

    @property
    def max_k(self) -> int:
        return self.components.shape[1]


def _flat(x: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """Rows i:j as float64 vectors in [0, 1] units (uint8 images are divided by 255)."""
    part = x[i:j]
    part = part.reshape(len(part), -1).to(torch.float64)
    return part / 255.0 if x.dtype == torch.uint8 else part


def _eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.linalg.eigh` on one thread: the threaded LAPACK spins badly on a busy machine
    (measured on 2 shared cores: 240x240 took 5 s on two threads, 0.03 s on one)."""
    with torch_threads(1):
        return torch.linalg.eigh(a)


def fit_pca(x: torch.Tensor) -> PcaFit:
    """Fit PCA to N samples `x` (N, ...) — uint8 images or floats; flattened to N x D."""
    n = len(x)
    if n < 2:
        raise ValueError("PCA needs at least two samples")
    mean = sum(_flat(x, i, min(n, i + CHUNK)).sum(0) for i in range(0, n, CHUNK)) / n
    d = mean.numel()
    if n < d:
        # fewer samples than dimensions (smoke runs): the n x n Gram matrix has the same non-zero
        # eigenvalues, and X^T u / sqrt(lambda) are the principal axes; exact and much smaller
        xc = _flat(x, 0, n) - mean
        vals, u = _eigh(xc @ xc.T)
        keep = vals > vals.max() * 1e-12  # drop the null space (at least the one the centring adds)
        vals, u = vals[keep].flip(0), u[:, keep].flip(1)
        return PcaFit(mean, (xc.T @ u / vals.sqrt()).contiguous(), vals / n)
    cov = torch.zeros(d, d, dtype=torch.float64)
    for i in range(0, n, CHUNK):
        c = _flat(x, i, min(n, i + CHUNK)) - mean
        cov.addmm_(c.T, c)
    vals, vecs = _eigh(cov / n)  # ascending order
    return PcaFit(mean, vecs.flip(1).contiguous(), vals.flip(0).clamp_min(0))


def reconstruct(fit: PcaFit, x: torch.Tensor, k: int) -> torch.Tensor:
    """The rank-k PCA reconstruction of `x` (same shape, float32, clamped to [0, 1])."""
    k = min(k, fit.max_k)
    flat = _flat(x, 0, len(x))
    d = fit.mean.numel()
    if k > d // 2 and fit.max_k == d:
        # the complement is smaller: x minus its part along the discarded axes (half the work or less)
        rest = fit.components[:, k:]
        rec = flat - ((flat - fit.mean) @ rest) @ rest.T
    else:
        v = fit.components[:, :k]
        rec = ((flat - fit.mean) @ v) @ v.T + fit.mean
    return rec.clamp_(0, 1).to(torch.float32).reshape(x.shape)


def evaluate_pca(fit: PcaFit, images: torch.Tensor, ks: list[int], batch: int = 1000) -> dict[int, dict]:
    """MSE, PSNR and SSIM of the rank-k reconstruction of `images` (N, C, H, W) for each k.

    Metrics come from `cae.core.metrics.MetricSums`, exactly as for the networks.
    """
    out: dict[int, dict] = {}
    for k in ks:
        sums = MetricSums()
        for i in range(0, len(images), batch):
            part = images[i:i + batch]
            target = part.float() / 255.0 if part.dtype == torch.uint8 else part.float()
            sums.add(reconstruct(fit, part, k), target)
        out[k] = {**sums.result(), "k": min(k, fit.max_k)}
    return out
