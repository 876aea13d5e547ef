"""Colorization from hints without learning: the baselines a guided colorizer must beat.

Both spread the hints' chrominance (`cae.core.photo.hint_maps`) over a gray image at a working
scale, and the photo path (`cae.core.photo.predict_guided`) upsamples it and merges it with the
full-resolution luma, as it does for the learned colorizer:
  idw:   inverse-distance weighting: each pixel takes the mean of the hinted pixels' chroma,
         weighted by 1 / distance^2; it ignores the image (colour bleeds across edges);
  levin: Levin, Lischinski & Weiss, "Colorization using Optimization" (SIGGRAPH 2004): each
         pixel's chroma is the weighted mean of its 3x3 neighbours', weighted by how alike their
         luma is, and the hinted pixels are fixed; one sparse linear system per image (scipy).
"""

from __future__ import annotations

import numpy as np
import torch

from cae.core.hints import hints_of
from cae.core.photo import PhotoColorizer, predict_guided, rgb_input
from cae.errors import CaeError

WORKING_SIZE = 256  # short side (pixels) the baselines solve at: Levin's system has one unknown per pixel
IDW_POWER = 2.0
IDW_CHUNK = 1 << 22  # pixel-source pairs per step (16 MB of distances)
LEVIN_MIN_VARIANCE = 1e-6  # floor of a window's luma variance (a flat window: weights ~ equal)
# sigma_r^2 = this x the window's luma variance: the paper's exp(-d^2 / 2 sigma_r^2) with sigma_r^2
# the variance itself lets colour leak across edges (a neighbour across a step of the window's own
# contrast keeps weight ~0.1); the authors' published code uses 0.6 var without the 2, i.e. 0.3
LEVIN_VARIANCE_SCALE = 0.3
LEVIN_MAX_PIXELS = 1_500_000  # unknowns of one system; SuperLU's fill grows faster than the pixels


def idw_chroma(y: torch.Tensor, cmap: torch.Tensor, mask: torch.Tensor, power: float = IDW_POWER) -> torch.Tensor:
    """Chroma (1,2,h,w): at each pixel the mean of the hinted pixels' chroma weighted by
    1 / distance^power (in pixels); the hinted pixels keep theirs; neutral (0.5) without hints.
    `y` (the luma) is not used: inverse distance does not look at the image."""
    h, w = mask.shape[-2:]
    src = mask[0, 0].flatten().nonzero()[:, 0]
    if len(src) == 0:
        return cmap.clone()
    pos = torch.stack([src // w, src % w], dim=1).double()
    vals = cmap[0].flatten(1)[:, src].double().T  # (M, 2)
    grid = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).view(-1, 2).double()
    out = torch.empty(h * w, 2, dtype=torch.float64)
    step = max(1, IDW_CHUNK // len(src))
    for i in range(0, h * w, step):
        d2 = torch.cdist(grid[i:i + step], pos).square_()
        wt = d2.clamp_(min=1e-12).pow_(-power / 2)  # a hinted pixel itself: weight 1e12, its own value
        out[i:i + step] = wt @ vals / wt.sum(dim=1, keepdim=True)
    return out.T.reshape(1, 2, h, w).float()


def levin_weights(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 3x3-window affinities of a luma image (h, w): (rows, cols, weights) of the sparse
    matrix W whose row r holds w_rs = exp(-(Y_r - Y_s)^2 / (2 var_r)) over r's neighbours s,
    normalized to sum to 1 (var_r: LEVIN_VARIANCE_SCALE x the luma variance of r's window, floored)."""
    h, w = y.shape
    idx = np.arange(h * w).reshape(h, w)
    pad = np.pad(y, 1, mode="constant", constant_values=np.nan)
    pidx = np.pad(idx, 1, mode="constant", constant_values=-1)
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    window = np.stack([pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in offsets])  # (9, h, w), NaN outside
    var = LEVIN_VARIANCE_SCALE * np.maximum(np.nanvar(window, axis=0), LEVIN_MIN_VARIANCE)
    nbr = [k for k, o in enumerate(offsets) if o != (0, 0)]
    d2 = (window[nbr] - y) ** 2  # (8, h, w)
    # shifted by each pixel's smallest difference before exp: the same normalized weights, and a
    # pixel unlike all its neighbours (d2 >> var) still gets weights instead of 0/0
    logit = -(d2 - np.nanmin(d2, axis=0)) / (2 * var)
    wt = np.where(np.isnan(logit), 0.0, np.exp(np.nan_to_num(logit, nan=-np.inf)))
    wt /= wt.sum(axis=0)
    cols = np.stack([pidx[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in (offsets[k] for k in nbr)])
    keep = cols >= 0
    rows = np.broadcast_to(idx, cols.shape)
    return rows[keep], cols[keep], wt[keep]


def levin_chroma(y: torch.Tensor, cmap: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Chroma (1,2,h,w) minimizing sum_r (U_r - sum_s w_rs U_s)^2 with the hinted pixels fixed
    (`levin_weights`): the sparse system (I - W) U = 0 on free pixels, U = hint on hinted ones,
    solved once for both channels (SuperLU); neutral (0.5) without hints."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    h, w = y.shape[-2:]
    if h * w > LEVIN_MAX_PIXELS:
        raise CaeError(f"Levin's method solves for every working pixel, and {w}x{h} = {h * w:,} is more than "
                       f"{LEVIN_MAX_PIXELS:,}; give a smaller working size (the default is {WORKING_SIZE})")
    fixed = mask[0, 0].flatten().numpy() > 0
    if not fixed.any():
        return cmap.clone()
    rows, cols, wt = levin_weights(y[0, 0].double().numpy())
    free = ~fixed[rows]  # a hinted pixel's row is the identity
    n = h * w
    a = sp.identity(n, format="csr") - sp.csr_matrix((wt[free], (rows[free], cols[free])), shape=(n, n))
    b = np.where(fixed[:, None], cmap[0].flatten(1).T.double().numpy() - 0.5, 0.0)  # about neutral
    # the matrix has the grid's symmetric pattern: ordering on A + A^T halves SuperLU's fill (and time)
    u = splu(a.tocsc(), permc_spec="MMD_AT_PLUS_A").solve(b)
    return torch.from_numpy(u.T.reshape(1, 2, h, w) + 0.5).float()


METHODS = {"idw": idw_chroma, "levin": levin_chroma}


class GuidedBaseline(PhotoColorizer):
    """A photo colorized from hints by a baseline (`METHODS`) at a working scale, its luma kept:

        baseline = cae.GuidedBaseline("levin")
        baseline.colorize("photo.jpg", hints="hints.json").save("photo-guided.png")
        rgb = baseline(gray, hints=[{"x": 120, "y": 40, "color": "#b02020"}])  # (3, H, W) tensors

    Without hints the result is the gray image."""

    def __init__(self, method: str = "levin", working_size: int = WORKING_SIZE) -> None:
        if method not in METHODS:
            raise CaeError(f"unknown hint method {method!r}; use one of {', '.join(METHODS)}")
        if working_size < 0:
            raise CaeError(f"the working size must be 0 (native) or positive, got {working_size}")
        self.method, self.working_size = method, working_size

    def __call__(self, image: torch.Tensor, hints=None) -> torch.Tensor:  # noqa: ANN001 - see hints_of
        """The RGB (3,H,W) in [0, 1] of an image (3,H,W) or (1,H,W) in [0, 1] colorized from `hints`."""
        return predict_guided(rgb_input(image), hints_of(hints), METHODS[self.method], self.working_size)
