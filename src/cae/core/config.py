"""Typed configuration: one dataclass per concern, nested in `RunConfig`.

Every run saves the exact `RunConfig` it used as `config.toml`; `load_config` reads it back.
The configs that ship with cae (`cae/configs/`, e.g. 'reference', 'colorize-best') have the
same format and load by name."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from cae.errors import CaeError

TASKS = ("reconstruct", "colorize")
TARGETS = ("rgb", "ycbcr", "lab")
PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("onecycle", "cosine", "constant")
NORMALIZATIONS = ("unit", "standardize")
DECODERS = ("regression", "classes")
UPSAMPLERS = ("bilinear", "guided")


@dataclass
class DataConfig:
    """Where the images come from and how they are split and scaled."""

    dir: str = ""  # empty: --data / CAE_DATA_DIR / user cache / download (see cae.core.data)
    seed: int = 0  # seed of the 80/10/10 split
    limit: int = 0  # 0: all 60,000 images; N: a stratified subset of N (smoke runs)
    # 'standardize': per-channel input standardization fitted on the training split (measured:
    # reference test MSE 0.00375 vs 0.0044 with 'unit' at 10 epochs); 'unit': inputs in [0, 1].
    # Targets and every reported error stay in [0, 1] pixel units either way.
    normalize: str = "standardize"


@dataclass
class TrainConfig:
    """The optimisation: Adam on the MSE of the RGB output."""

    epochs: int = 10
    # batch 128 trains more images/s than 64 on a 2-core CPU (cae bench); its peak lr is tuned
    # on the reference, and is stable with `clip` (the per-seed tables in docs/performance.md)
    batch_size: int = 128
    lr: float = 2e-2
    schedule: str = "onecycle"
    warmup: float = 0.15  # fraction of steps spent warming up (onecycle)
    weight_decay: float = 0.0
    # largest global gradient norm per step (0: off); the gradient of a step above it is scaled
    # down to it, so one rounding-driven spike at the peak learning rate cannot throw Adam out of
    # its basin. Without it the reference at these defaults collapsed for some seeds on some CPUs;
    # 0.05 is about twice the reference's median gradient norm at the peak (docs/performance.md)
    clip: float = 0.05
    seed: int = 0  # model initialisation and shuffling
    precision: str = "auto"  # 'auto': bf16 autocast where the CPU/GPU runs it natively
    device: str = "auto"
    eval_batch_size: int = 1000
    # validate each epoch on the first N validation images only (0: all of them): the best epoch
    # is chosen on them, then its model is evaluated on the whole split, the val_mse reported.
    # The split is shuffled, so the first N are a random sample; a study sets it to save time.
    val_subset: int = 0
    # mirror a seeded half of each epoch's training images left-right (a photo's mirror image is
    # as likely as the photo); off by default, so the figures measured without it stay
    flip: bool = False
    # translate each training image by up to N pixels along each axis, a seeded draw per image and
    # epoch, the uncovered border filled by reflection (0: off; 4 is the usual CIFAR-10 choice)
    shift: int = 0

    def validate(self) -> None:
        """Refuse optimisation settings that cannot work (before any data is read)."""
        if not 0 < self.lr < math.inf:
            raise CaeError(f"train.lr must be a positive number, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise CaeError(f"train.warmup is the fraction of steps spent warming up: in [0, 1), got {self.warmup}")
        if not 0 <= self.weight_decay < math.inf:
            raise CaeError(f"train.weight_decay must be 0 or positive, got {self.weight_decay}")
        if self.seed < 0:
            raise CaeError(f"train.seed must be 0 or positive, got {self.seed}")
        if self.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", self.device):
            raise CaeError(f"train.device = {self.device!r} is not one of auto, cpu, cuda, cuda:N")


@dataclass
class ColorConfig:
    """How a colorizer (task 'colorize', chroma target) predicts and decodes chrominance."""

    # 'regression': the chroma itself (sigmoid head, MSE on RGB); 'classes': logits over a
    # bins x bins grid of (Cb, Cr) (cross-entropy, then an annealed mean; Zhang et al. 2016)
    decoder: str = "regression"
    bins: int = 13
    # class rebalancing (classes): weight of bin q is 1 / ((1 - r) / Q + r p_q), p_q the training
    # split's bin frequencies; 0 = plain cross-entropy, 0.5 = Zhang et al.'s lambda = 0.5
    rebalance: float = 0.0
    # after training, train_run picks the decoding strength (chroma gain for regression,
    # temperature for classes) on the validation split: the least vivid one that restores
    # `colorfulness_target` of the truth's colorfulness within `mse_tolerance` extra MSE over
    # the best decoding (else the most colorful within it), refined between the grid's steps to
    # where the target is crossed (measured, kept if it holds); stored with the weights
    calibrate: bool = False
    # classes: the calibrated strength is the decoding-time rebalancing `boost` (logits + boost *
    # log w, w Zhang's weights at this strength, from the training split) when above 0, else T
    decode_rebalance: float = 0.0
    colorfulness_target: float = 0.6
    mse_tolerance: float = 0.05
    # `cae colorize`: short side (pixels) of the copy the chroma is predicted on; 0 = native size
    working_size: int = 32
    # `cae colorize` / `cae serve`, classifier colorizers: the boost photos are decoded at (-1: the
    # calibrated one). Photos lie outside CIFAR-10, where the net's confidence in a vivid colour
    # is worth less than on the split the boost was calibrated on
    photo_boost: float = -1.0
    # classes: after the annealed mean, each image's chroma is spread around its own mean chroma by
    # this gain (1 = off). Colorfulness is the spread of colours within an image, which an MSE-wise
    # cautious net shrinks; widening it costs less MSE per point of colorfulness than boosting alone
    # (docs/colorization.md). CIFAR-10 evaluation only: photos decode at 1, as their boost is apart
    spread: float = 1.0
    # guided colorization (docs/guided.md): the network also sees hints, a chroma map and a mask
    # (Zhang et al. 2017); training reveals the true chroma at random pixels of each image, a
    # log-uniform number from 1 to `max_hints`, and none for a `hint_free` share of the images
    # (which is what the automatic mode, 0 hints, learns from); validation and test use no hints
    hints: bool = False
    # `cae colorize`: how the working-scale chroma reaches the photo's size: 'bilinear', or 'guided'
    # (edge-aware: He et al.'s guided filter with the photo's luma as the guide, `cae.core.photo`)
    upsample: str = "bilinear"
    hint_free: float = 0.25
    max_hints: int = 64

    def validate(self, run: "RunConfig") -> None:
        """Refuse settings that cannot work with the run's task, target and architecture."""
        _choice("color.decoder", self.decoder, DECODERS)
        _choice("color.upsample", self.upsample, UPSAMPLERS)
        if self.decoder == "classes" and (run.task, run.target) != ("colorize", "ycbcr"):
            raise CaeError("color.decoder = 'classes' needs task 'colorize' with target 'ycbcr'")
        if self.decoder == "classes" and not _is_unet(run.arch):
            raise CaeError(f"color.decoder = 'classes' needs a U-Net (arch unetW), got {run.arch!r}")
        if self.bins < 3:
            raise CaeError(f"color.bins must be at least 3, got {self.bins}")
        if not 0 <= self.rebalance < 1 or not 0 <= self.decode_rebalance < 1:
            raise CaeError(f"color.rebalance and color.decode_rebalance must be in [0, 1), got {self.rebalance}, "
                           f"{self.decode_rebalance}")
        if self.photo_boost != -1 and self.photo_boost < 0:
            raise CaeError(f"color.photo_boost must be >= 0 (or -1: the calibrated boost), got {self.photo_boost}")
        if not 0 < self.spread <= 3:
            raise CaeError(f"color.spread must be in (0, 3] (1 = off), got {self.spread}")
        if self.mse_tolerance < 0 or not 0 <= self.colorfulness_target <= 2:
            raise CaeError("color.mse_tolerance must be >= 0 and color.colorfulness_target in [0, 2]")
        if self.working_size < 0:
            raise CaeError(f"color.working_size must be 0 (native size) or positive, got {self.working_size}")
        self._validate_fit(run)

    def _validate_fit(self, run: "RunConfig") -> None:
        """Settings a run would otherwise ignore, or fail on after its last epoch: refused at start."""
        classes = self.decoder == "classes"
        for name, value, off in (("rebalance", self.rebalance, 0.0), ("decode_rebalance", self.decode_rebalance, 0.0),
                                 ("photo_boost", self.photo_boost, -1.0), ("spread", self.spread, 1.0)):
            if value != off and not classes:
                raise CaeError(f"color.{name} = {value:g} acts on a chroma classifier's bins only; set "
                               f"color.decoder = 'classes' or leave color.{name} at {off:g}")
        if self.hints and (run.task, run.target) != ("colorize", "ycbcr"):
            raise CaeError(f"color.hints = true needs task 'colorize' with target 'ycbcr' (hints are BT.601 "
                           f"chroma), got task {run.task!r}, target {run.target!r}; set color.hints = false")
        if self.hints and not _is_unet(run.arch):
            raise CaeError(f"color.hints = true needs a U-Net (arch unetW), got {run.arch!r}")
        if not 0 <= self.hint_free <= 1 or self.max_hints < 1:
            raise CaeError(f"color.hint_free must be in [0, 1] and color.max_hints >= 1, got {self.hint_free}, "
                           f"{self.max_hints}")
        if self.calibrate and (run.task != "colorize" or run.target == "rgb" or not _is_unet(run.arch)):
            raise CaeError(f"color.calibrate = true needs a U-Net colorizer of chroma (task 'colorize', target "
                           f"'ycbcr' or 'lab', arch unetW), got task {run.task!r}, target {run.target!r}, arch "
                           f"{run.arch!r}; set color.calibrate = false")


@dataclass
class RunConfig:
    """Everything a run needs; saved with the run and loaded back exactly."""

    task: str = "reconstruct"  # 'reconstruct' or 'colorize'
    target: str = "rgb"  # colorize only: 'rgb' (predict RGB) or a chroma space 'ycbcr' / 'lab'
    arch: str = "reference"  # a preset name or an architecture spec (see cae.core.spec)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    color: ColorConfig = field(default_factory=ColorConfig)
    world_size: int = 1  # recorded by the trainer: processes that trained this run

    def validate(self) -> "RunConfig":
        """Refuse values that cannot work, with the allowed ones in the message."""
        _choice("task", self.task, TASKS)
        _choice("target", self.target, TARGETS)
        _choice("train.precision", self.train.precision, PRECISIONS)
        _choice("train.schedule", self.train.schedule, SCHEDULES)
        _choice("data.normalize", self.data.normalize, NORMALIZATIONS)
        if self.task == "reconstruct" and self.target != "rgb":
            raise CaeError("target must be 'rgb' for task 'reconstruct'; chroma targets are for --task colorize")
        self.color.validate(self)
        for name, value in (("train.epochs", self.train.epochs), ("train.batch_size", self.train.batch_size),
                            ("train.eval_batch_size", self.train.eval_batch_size)):
            if value < 1:
                raise CaeError(f"{name} must be at least 1, got {value}")
        if self.train.val_subset < 0:
            raise CaeError(f"train.val_subset must be 0 (the whole split) or a number of images, got {self.train.val_subset}")
        if not 0 <= self.train.shift < 16:
            raise CaeError(f"train.shift must be 0 (off) to 15 pixels, got {self.train.shift}")
        self.train.validate()
        if self.data.seed < 0:
            raise CaeError(f"data.seed must be 0 or positive, got {self.data.seed}")
        if self.data.limit < 0 or 0 < self.data.limit < 30:
            raise CaeError(f"data.limit must be 0 (all images) or at least 30, got {self.data.limit}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "RunConfig":
        return dataclass_from_dict(cls, d, source)


def _is_unet(arch: str) -> bool:
    """Whether an arch is the U-Net (`unetW`): the only model with a colorizer's decoding buffers."""
    return arch.strip().startswith("unet")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise CaeError(f"{name} = {value!r} is not one of {', '.join(allowed)}")


def dataclass_from_dict(cls: type, d: dict[str, Any], source: str) -> Any:
    """Build a dataclass from a dict, refusing unknown keys (a typo must not pass silently)."""
    if not isinstance(d, dict):
        raise CaeError(f"{source}: expected a table for {cls.__name__}, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise CaeError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    kwargs = {}
    defaults = cls()
    for name, value in d.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = dataclass_from_dict(type(default), value, f"{source} [{name}]")
        else:
            kwargs[name] = _coerce(value, type(default), f"{source}: {name}")
    return cls(**kwargs)


def _coerce(value: Any, typ: type, where: str) -> Any:
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (typ is bool) or not isinstance(value, typ):
        raise CaeError(f"{where} must be {typ.__name__}, got {value!r}")
    return value


def save_config(cfg: RunConfig, path: Path) -> None:
    """Write the config as TOML (or JSON for a .json path), atomically."""
    from cae.core.runs import atomic_write_text

    d = cfg.to_dict()
    text = json.dumps(d, indent=2) + "\n" if path.suffix == ".json" else tomli_w.dumps(d)
    atomic_write_text(path, text)


SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def file_or_shipped(name: str | Path, shipped: Path, what: str, accepts: str) -> Path:
    """`name` if it is a file, else the .toml file of that name in the package folder `shipped`:
    a bare name ('colorize-best'), the file name, or the source tree's path (configs/NAME.toml),
    so a command copied from the docs works from an installed package. `what` names the kind of
    file ('config', 'study') and `accepts` the files a user may pass, for the error."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = shipped / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
    if candidate.is_file() and len(path.parts) <= 2:  # a bare name, or FOLDER/NAME
        return candidate
    have = ", ".join(sorted(p.stem for p in shipped.glob("*.toml"))) or "none"
    raise CaeError(f"{what} file {path} not found; pass an existing {accepts} or a shipped {what} ({have})")


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML or JSON config, or one shipped with cae by name ('reference', 'colorize-best',
    from `cae/configs/`); a missing or malformed file is a `CaeError` naming it."""
    path = file_or_shipped(path, SHIPPED_CONFIGS, "config", ".toml or .json file")
    try:
        text = path.read_text()
        d = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise CaeError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}") from None
    return RunConfig.from_dict(d, str(path)).validate()


# where a run ran, not what it computes: never a reason to refuse a run folder
RUN_LOCAL = ("world_size", "train.device", "data.dir")


def differences(saved: RunConfig, given: RunConfig, ignore: tuple[str, ...] = RUN_LOCAL) -> dict[str, tuple]:
    """Every setting ('train.lr', 'arch', ...) whose value differs: name -> (saved, given)."""
    def flat(c: RunConfig) -> dict[str, Any]:
        items: dict[str, Any] = {}
        for k, v in c.to_dict().items():
            items.update({f"{k}.{kk}": vv for kk, vv in v.items()} if isinstance(v, dict) else {k: v})
        return {k: v for k, v in items.items() if k not in ignore}

    a, b = flat(saved), flat(given)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}

