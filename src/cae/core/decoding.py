"""How a colorizer's chroma output is decoded, and how its strength is chosen on a split.

The strengths: 'chroma_gain' (a regression head's chroma scaled around gray), 'temperature'
(a classifier's annealed mean) and 'boost' (a classifier's decoding-time rebalancing). A run
with `color.calibrate` picks one on its validation split inside train_run
(`cae.core.train.calibrate_decoding`), and the colorization study plots their curves."""

from __future__ import annotations

import math

import torch

from cae.core.color import merge_chroma
from cae.core.data import luma
from cae.core.metrics import MetricSums, colorfulness

GAIN_GRID = tuple(round(1.0 + 0.05 * i, 2) for i in range(21))  # 1.00 ... 2.00
BOOST_GRID = tuple(round(0.25 * i, 2) for i in range(9))  # 0 ... 2
TEMPERATURE_GRID = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1)
DECODING_GRIDS = {"boost": BOOST_GRID, "temperature": TEMPERATURE_GRID, "chroma_gain": GAIN_GRID}  # by strength
DECODING_FILE = "decoding.json"  # the validation curve behind a run's calibrated decoding
DECODING_LABELS = {"chroma_gain": "gain", "temperature": "T", "boost": "boost"}  # names in the tables
DEFAULT_DECODING = {"chroma_gain": 1.0, "temperature": 1.0, "boost": 0.0}  # each strength before calibration


def decoding_curve(model: torch.nn.Module, images_u8: torch.Tensor, task, param: str,  # noqa: ANN001
                   grid: tuple[float, ...], batch: int = 250) -> list[dict]:
    """MSE and colorfulness of the merged prediction for each decoding strength of `grid`:
    `param` 'chroma_gain', 'temperature' or 'boost' (see the module's docstring)."""
    sse, col = torch.zeros(len(grid), dtype=torch.float64), torch.zeros(len(grid), dtype=torch.float64)
    truth = 0.0
    for j, pred, rgb in _decoded(model, images_u8, task, param, grid, batch):
        pred = pred.clamp(0, 1)
        if j == 0:  # once per batch
            truth += colorfulness(rgb).sum().item()
        sse[j] += torch.sum((pred - rgb) ** 2).item()
        col[j] += colorfulness(pred).sum().item()
    n = len(images_u8)
    return [{param: v, "mse": sse[j].item() / (n * 3 * images_u8.shape[2] * images_u8.shape[3]),
             "colorfulness": col[j].item() / n, "colorfulness_truth": truth / n} for j, v in enumerate(grid)]


def decoded_metrics(model: torch.nn.Module, images_u8: torch.Tensor, task, param: str,  # noqa: ANN001
                    values: tuple[float, ...], batch: int = 500) -> list[dict]:
    """Every metric of `cae.core.train.evaluate` (MSE, PSNR, SSIM, chroma MSE, colorfulness) for
    each decoding strength of `values`."""
    sums = [MetricSums(colour=True) for _ in values]
    for j, pred, rgb in _decoded(model, images_u8, task, param, values, batch):
        sums[j].add(pred, rgb)  # the [0, 1] floats, as `evaluate` gives them
    return [{**s.result(), param: v} for s, v in zip(sums, values)]


@torch.inference_mode()
def _decoded(model: torch.nn.Module, images_u8: torch.Tensor, task, param: str,  # noqa: ANN001, ANN202
             values: tuple[float, ...], batch: int):
    """(j, the merged RGB prediction at values[j], the truth in [0, 1]) for each batch and each
    value: the network runs once per batch, only the decoding repeats."""
    for i in range(0, len(images_u8), batch):
        rgb = torch.div(images_u8[i:i + batch], 255)  # as `evaluate` converts a batch
        raw, y = model.raw(task.network_input(rgb)).float(), luma(rgb)
        for j, v in enumerate(values):
            yield j, merge_chroma(y, _decode(model, raw, param, v, rgb), task.target), rgb


def _decode(model: torch.nn.Module, raw: torch.Tensor, param: str, v: float, rgb: torch.Tensor) -> torch.Tensor:
    """The chroma of the head's output `raw` decoded at strength `v` of `param`."""
    if param == "chroma_gain":
        return 0.5 + v * (raw - 0.5)
    strengths = {"boost": v} if param == "boost" else {"temperature": v, "boost": 0.0}  # a temperature alone
    return _upsample(model.decode(raw, **strengths), rgb)


def _upsample(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(c, size=like.shape[-2:], mode="bilinear", align_corners=False)


def choose_decoding(curve: list[dict], param: str, tolerance: float, target: float) -> float:
    """The decoding strength to use, from a validation curve: among those within `tolerance`
    extra MSE over the curve's best, the least colourful restoring `target` of the truth's
    colorfulness (saturation bought at the least MSE); if none does, the most colourful."""
    limit = min(r["mse"] for r in curve) * (1 + tolerance)
    allowed = [r for r in curve if r["mse"] <= limit]
    enough = [r for r in allowed if r["colorfulness"] >= target * r["colorfulness_truth"]]
    pick = min(enough, key=lambda r: r["colorfulness"]) if enough else max(allowed, key=lambda r: r["colorfulness"])
    return pick[param]


def between_steps(curve: list[dict], param: str, target: float, step: float = 0.01) -> float | None:
    """Where the curve (in its grid's order) first crosses `target` of the truth's colorfulness,
    by linear interpolation between the two grid points around the crossing, on a `step` grid
    towards the colourful side; None when the curve does not cross it between two points. A
    coarse grid overshoots the target by up to one step, paid in MSE (or, with that step beyond
    the MSE tolerance, misses it); colorfulness is concave in the strength, so the interpolated
    point reaches the target (train_run measures it and keeps it only if it does)."""
    i = next((i for i, r in enumerate(curve) if r["colorfulness"] >= target * r["colorfulness_truth"]), 0)
    if i == 0:  # reached at the grid's first point, or not at all
        return None
    lo, hi = curve[i - 1], curve[i]
    f = (target * hi["colorfulness_truth"] - lo["colorfulness"]) / (hi["colorfulness"] - lo["colorfulness"])
    v = lo[param] + f * (hi[param] - lo[param])
    towards = math.ceil if hi[param] > lo[param] else math.floor
    v = round(towards(round(v / step, 6)) * step, 6)
    return v if v != hi[param] else None


def reset_decoding(model: torch.nn.Module) -> None:
    """Every decoding strength of `model` back to its default (a calibration starts from there)."""
    for param, value in DEFAULT_DECODING.items():
        if hasattr(model, param):
            getattr(model, param).fill_(value)


def decoding_param(task, color) -> tuple[str, tuple[float, ...]]:  # noqa: ANN001
    """The decoding strength a run calibrates, and its grid."""
    if not task.bins:
        return "chroma_gain", GAIN_GRID
    return ("boost", BOOST_GRID) if color.decode_rebalance else ("temperature", TEMPERATURE_GRID)
