"""cae: convolutional autoencoders on images (CIFAR-10 reconstruction, architecture study,
colorization). The public API is re-exported here; the CLI (`cae`) is a thin shell over it.

    import cae
    model = cae.build_model("reference")       # the handout's layers, plain torch.nn
    info = cae.trace("reference")              # shapes, size formula, latent size, params
    metrics = cae.train_run(cae.RunConfig(arch="reference"), "runs/ref")
    cae.Colorizer.load().colorize("photo.jpg").save("photo-color.png")
    cae.GuidedBaseline("levin").colorize("photo.jpg", hints="hints.json").save("guided.png")
"""

from __future__ import annotations

from pathlib import Path

from cae import fast
from cae.core import train as _train
from cae.core.config import RunConfig, load_config
from cae.core.model import build_model
from cae.core.photo import Colorizer
from cae.core.spec import trace
from cae.core.train import load_run
from cae.errors import CaeError
from cae.experiments.guided import GuidedBaseline

__version__ = "0.2.0"
__all__ = ["CaeError", "Colorizer", "GuidedBaseline", "RunConfig", "build_model", "eval_run", "load_config", "load_run",
           "trace", "train_run", "__version__"]


def train_run(cfg: RunConfig, out: str | Path, **options) -> dict:  # noqa: ANN003 - see core.train.train_run
    """`cae.core.train.train_run` with the fast path on (unless `CAE_FAST=0`)."""
    return _train.train_run(cfg, out, accelerate=fast.path(), **options)


def eval_run(run_dir: str | Path, **options) -> dict[str, float]:  # noqa: ANN003 - see core.train.eval_run
    """`cae.core.train.eval_run` through the same fast path as `train_run`: in bf16 the fast path
    and the plain model round differently, so only the same path gives back test_metrics.json."""
    return _train.eval_run(run_dir, accelerate=fast.path(), **options)
