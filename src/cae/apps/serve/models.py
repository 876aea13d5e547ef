"""The models the page offers: the shipped weights, finished runs found under --runs, a cache.

A model is chosen by the id listed here; the page never sends a path. Every call into the
colorization API goes through `colorize_rgb`, so the one place to change when that API moves
is that function.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cae.core import runs
from cae.apps.colorize import shipped_model_dir
from cae.apps.serve.results import find_reports
from cae.core.photo import Colorizer, decode_for_photos
from cae.errors import CaeError

TASKS = ("colorize", "reconstruct")
SHIPPED = {"colorize": "colorizer", "reconstruct": "reference"}  # task -> folder in cae/weights
SHIPPED_GUIDED = "guided"  # the guided colorizer's folder in cae/weights (the Guide mode's model)
GUIDE = "guide"  # the Guide mode's models: colorize runs trained with hints (color.hints)
MAX_DEPTH = 4  # runs/<study>/<variant>/<seed>/ is as deep as cae's own layouts go
MAX_FOLDERS = 5000  # stop scanning a huge --runs tree instead of stalling the page
CACHE_SIZE = 4  # loaded models kept; each is small, but a --runs tree may hold hundreds
IMAGE_SIDE = 32  # the reconstruction models' input: CIFAR-10 images
REFRESH_SECONDS = 2.0  # how often a request may check --runs for new or changed runs
log = logging.getLogger("cae.serve")


@dataclass(frozen=True)
class ModelEntry:
    """One model of the select: what the page shows and sends back, and where it lives."""

    id: str  # e.g. 'shipped/colorizer' or 'runs/study/best'; looked up, never opened as a path
    task: str  # 'colorize' or 'reconstruct'
    label: str
    run_dir: Path
    guided: bool = False  # a colorizer trained with hints: listed for the Guide mode, not Colorize


@dataclass
class LoadedModel:
    """A model ready to run: the network, its config and its task (see `cae.core.train.load_run`)."""

    entry: ModelEntry
    net: nn.Module
    cfg: object  # cae.core.config.RunConfig
    task: object  # cae.core.tasks.Task
    latent: dict | None = None  # reconstruction models: `latent_description`


class RunsIndex:
    """The models and reports the page offers, scanned once and kept: a request reads the index.

    At most every `min_interval` seconds a request checks whether --runs changed (a walk that
    lists folders and stats two files per finished run, no parsing); only run folders whose
    config or test metrics changed are parsed again. The shipped weights are parsed once.
    """

    def __init__(self, runs_dir: Path | None, min_interval: float = REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.runs_dir = runs_dir
        self._min_interval, self._clock = min_interval, clock
        self._lock = threading.Lock()
        self._shipped = [e for e in (model_entry(shipped_model_dir(name), f"shipped/{name}", f"shipped {name}")
                                     for name in (*SHIPPED.values(), SHIPPED_GUIDED)) if e is not None]
        self._parsed: dict[Path, tuple[tuple, ModelEntry | None]] = {}  # run folder -> (stamp, entry)
        self._entries: list[ModelEntry] = list(self._shipped)
        self._reports: dict[str, Path] = {}
        self._checked: float | None = None

    def models(self) -> list[ModelEntry]:
        """The shipped models, then every usable finished run under --runs (sorted)."""
        self._refresh()
        return self._entries

    def reports(self) -> dict[str, Path]:
        """Folder name -> report.html (`find_reports`)."""
        self._refresh()
        return self._reports

    def listed(self, task: str) -> list[ModelEntry]:
        """The models of `task`: 'colorize' (automatic colorizers), 'guide' (guided ones), 'reconstruct'."""
        return [e for e in self.models() if (e.guided if task == GUIDE else e.task == task and not e.guided)]

    def find(self, model_id: str, task: str) -> ModelEntry:
        """The listed model `model_id` of `task`; anything else is refused with the valid ids."""
        listed = self.listed(task)
        for e in listed:
            if e.id == model_id:
                return e
        raise CaeError(f"unknown {task} model {model_id[:100]!r}; choose one of: {', '.join(e.id for e in listed)}")

    def _refresh(self) -> None:
        with self._lock:
            now = self._clock()
            if self.runs_dir is None or (self._checked is not None and now - self._checked < self._min_interval):
                return
            self._checked = now
            parsed = {}
            for d in finished_runs(self.runs_dir):
                try:
                    stamp = _stamp(d)
                except OSError:  # removed since the walk
                    continue
                old = self._parsed.get(d)
                parsed[d] = old if old is not None and old[0] == stamp else \
                    (stamp, model_entry(d, f"runs/{d.relative_to(self.runs_dir).as_posix()}",
                                        d.relative_to(self.runs_dir).as_posix()))
            self._parsed = parsed
            self._entries = self._shipped + [e for _, e in parsed.values() if e is not None]
            self._reports = find_reports(self.runs_dir)


def _stamp(run_dir: Path) -> tuple:
    """What changes when a run folder's listing would: its config's and test metrics' times and sizes."""
    stats = [(run_dir / name).stat() for name in (runs.CONFIG, runs.TEST_METRICS)]
    return tuple((st.st_mtime_ns, st.st_size) for st in stats)


def finished_runs(root: Path) -> list[Path]:
    """Run folders with test_metrics.json under `root`, at most MAX_DEPTH levels down, sorted."""
    found: list[Path] = []
    seen = 0
    for folder, subdirs, files in os.walk(root):  # does not follow symlinks: no loops
        depth = len(Path(folder).relative_to(root).parts)
        subdirs[:] = sorted(s for s in subdirs if not s.startswith(".")) if depth < MAX_DEPTH else []
        seen += 1
        if runs.TEST_METRICS in files and runs.CONFIG in files:
            found.append(Path(folder))
        if seen >= MAX_FOLDERS:
            break
    return sorted(found)


def model_entry(run_dir: Path, model_id: str, name: str) -> ModelEntry | None:
    """The entry of a finished run, labelled with its architecture and test PSNR; None if unusable."""
    from cae.core.config import load_config

    try:
        cfg = load_config(run_dir / runs.CONFIG)
        psnr = runs.read_json(run_dir / runs.TEST_METRICS).get("psnr")
    except CaeError:
        return None  # a corrupt or foreign run folder is not offered, and does not break the list
    if cfg.task not in TASKS:
        return None
    what = f"{cfg.arch}, {cfg.target}" if cfg.task == "colorize" else cfg.arch
    score = f", test PSNR {psnr:.2f} dB" if isinstance(psnr, (int, float)) else ""
    guided = cfg.task == "colorize" and bool(cfg.color.hints)
    return ModelEntry(model_id, cfg.task, f"{name} ({what}{', guided' if guided else ''}{score})", run_dir, guided)


class ModelCache:
    """Models loaded once and shared by every request thread (a retrained run is reloaded)."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._size = size

    def get(self, entry: ModelEntry) -> LoadedModel:
        best = entry.run_dir / runs.BEST
        stamp = best.stat().st_mtime_ns if best.is_file() else 0
        key = (entry.id, stamp)
        # one lock for loads too: two requests for the same model load it once, not twice; a load
        # takes a fraction of a second
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            try:
                model = _load(entry)
            except (CaeError, OSError, RuntimeError) as e:  # the full reason, with its paths, stays in the log
                log.warning("cannot load model %s from %s: %s", entry.id, entry.run_dir, e)
                raise CaeError(f"the model {entry.id} cannot be loaded (the server log says why); "
                               "choose another model") from None
            self._models[key] = model
            while len(self._models) > self._size:
                self._models.popitem(last=False)
            return model


def _load(entry: ModelEntry) -> LoadedModel:
    """Load a run's best model and run it once on a tiny image (builds kernels, checks it works)."""
    from cae.core.train import load_run

    net, cfg, task = load_run(entry.run_dir, "auto")
    if task.kind != entry.task:
        raise CaeError(f"{entry.id} is a {task.kind} run, not a {entry.task} one")
    if task.kind == "colorize":
        decode_for_photos(net, cfg.color)
    model = LoadedModel(entry, net, cfg, task)
    if entry.task == "reconstruct":
        model.latent = latent_description(cfg.arch, task.in_channels, task.out_channels)
    tiny = torch.zeros(3, IMAGE_SIDE, IMAGE_SIDE)
    if entry.task == "colorize":
        colorize_rgb(model, tiny)
    else:
        reconstruct(model, tiny)
    return model


def colorizer_of(model: LoadedModel) -> Colorizer:
    """The only call into the colorization API: the chroma is predicted at the run's working
    scale (`color.working_size`), as `cae colorize` does by default."""
    return Colorizer(model.net, model.cfg, model.task)


def colorize_rgb(model: LoadedModel, rgb: torch.Tensor) -> torch.Tensor:
    """The colorized RGB (3,H,W) in [0, 1] of an RGB image (3,H,W) in [0, 1], same size."""
    return colorizer_of(model)(rgb)


@dataclass
class Reconstruction:
    """An autoencoder's output for one image, and its latent code (None when it has none)."""

    output: torch.Tensor  # (3, 32, 32) in [0, 1]
    latent: torch.Tensor | None  # (C, h, w)
    mse: float


def reconstruct(model: LoadedModel, rgb: torch.Tensor) -> Reconstruction:
    """Run a reconstruction model on one (3, 32, 32) image in [0, 1]."""
    x = rgb.unsqueeze(0).to(next(model.net.parameters()).device)
    with torch.inference_mode():
        out = model.task.predict_rgb(model.net, x).clamp(0, 1)
        latent = latent_code(model, x)
    mse = float(torch.mean((out - x) ** 2))
    return Reconstruction(out[0].cpu(), None if latent is None else latent[0].float().cpu(), mse)


def latent_code(model: LoadedModel, x: torch.Tensor) -> torch.Tensor | None:
    """The encoder's output for a batch `x` in [0, 1], or None for a model without one.

    A chain `AutoEncoder` exposes its encoder as `net.encoder`, a module whose output is the
    latent code (`load_run` gives the plain model: its encoder is the handout's encoder).
    A U-Net's `encoder` is a ModuleList feeding skip connections: it has no single code.
    """
    encoder = getattr(model.net, "encoder", None)
    if not isinstance(encoder, nn.Module) or isinstance(encoder, nn.ModuleList):
        return None
    z = model.task.network_input(x).contiguous(memory_format=torch.channels_last)
    return encoder(z)


def latent_description(arch: str, in_channels: int, out_channels: int) -> dict:
    """The latent shape and size of `arch` on 32x32 images, and the size formula of the layer
    that makes the code, from the shape trace (`cae.core.spec.trace`)."""
    from cae.core.spec import trace

    info = trace(arch, (in_channels, IMAGE_SIDE, IMAGE_SIDE), out_channels)
    c, h, w = info.latent_shape
    encoder_rows = [r for r in info.trace if r.stage == "encoder"]
    last = encoder_rows[-1] if encoder_rows else None
    return {"shape": [c, h, w], "size": info.latent_size, "product": f"{c} × {h} × {w} = {info.latent_size:,}",
            "layer": last.layer if last else "", "formula": last.formula if last else ""}
