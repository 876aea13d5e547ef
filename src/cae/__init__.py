"""cae: convolutional autoencoders on images (CIFAR-10 reconstruction, architecture study,
colorization). The public API is re-exported here; the CLI (`cae`) is a thin shell over it.

    import cae
    model = cae.build_model("reference")       # the handout's layers, plain torch.nn
    info = cae.trace("reference")              # shapes, size formula, latent size, params
    metrics = cae.train_run(cae.RunConfig(arch="reference"), "runs/ref")
    cae.Colorizer.load().colorize("photo.jpg").save("photo-color.png")
    cae.export_onnx("colorizer", "colorizer.onnx")  # a run folder or a shipped model, for onnxruntime
    cae.GuidedBaseline("levin").colorize("photo.jpg", hints="hints.json").save("guided.png")

The data and the baselines the handout compares against are here too: `load_cifar10` and
`split_indices` (the pooled images and the seeded split every run uses), `luma` (the gray image
a colorizer sees), `load_history` (a run's error per epoch), `fit_pca` / `evaluate_pca` (the
best linear code of k values) and `compute_baselines` (colorization's baselines: (a) gray,
(b) gray + mean chroma). examples/tour.ipynb walks through them.
"""

from __future__ import annotations

from pathlib import Path

from cae import fast
from cae.core import train as _train
from cae.core.config import RunConfig, load_config
from cae.core.data import load_cifar10, luma, split_indices
from cae.core.model import build_model
from cae.core.photo import Colorizer
from cae.core.spec import trace
from cae.core.train import load_history, load_run
from cae.errors import CaeError
from cae.experiments.baselines import compute_baselines
from cae.experiments.guided import GuidedBaseline
from cae.experiments.pca import evaluate_pca, fit_pca

__version__ = "0.2.0"
__all__ = ["CaeError", "Colorizer", "GuidedBaseline", "RunConfig", "build_model", "compute_baselines", "eval_run",
           "evaluate_pca", "export_onnx", "fit_pca", "load_cifar10", "load_config", "load_history", "load_run", "luma",
           "split_indices", "trace", "train_run", "__version__"]


def train_run(cfg: RunConfig, out: str | Path, **options) -> dict:  # noqa: ANN003 - see core.train.train_run
    """`cae.core.train.train_run` with the fast path on (unless `CAE_FAST=0`)."""
    return _train.train_run(cfg, out, accelerate=fast.path(), **options)


def eval_run(run_dir: str | Path, **options) -> dict[str, float]:  # noqa: ANN003 - see core.train.eval_run
    """`cae.core.train.eval_run` through the same fast path as `train_run`: in bf16 the fast path
    and the plain model round differently, so only the same path gives back test_metrics.json."""
    return _train.eval_run(run_dir, accelerate=fast.path(), **options)


def export_onnx(run: str | Path, path: str | Path, boost: float | None = None) -> Path:
    """`cae.apps.export.export_onnx`: the ONNX graph of a run folder or a shipped model ('colorizer',
    'reference') written to `path`; needs the onnx extra (`pip install 'cae[onnx]'`)."""
    from cae.apps import export  # torch.onnx and the onnx package only when exporting

    return export.export_onnx(run, path, boost)
