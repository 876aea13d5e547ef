"""Colorize photos of any size with a trained colorization run (or the weights shipped with cae).

Each file is read with Pillow (PNG, JPEG, ...; modes RGB, L, LA, RGBA, P, CMYK, 16-bit gray),
turned into BT.601 luma, run through the fully convolutional network (reflect-padded to a
multiple of its total stride, and in overlapping tiles when large), cropped back and written
as `<stem>.png`, with the photo's transparency if it has any. A file that cannot be read is
reported on one line and the others go on. A folder stands for the photos in it.
Before any work, every output name is checked: none may be an input file (a photo colorized
into its own folder), and no two inputs may share one (`a/x.jpg` and `b/x.png`).

The image pipeline itself (working scale, tiles) is `cae.core.photo`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch

from cae.core import runs
from cae.core.data import luma
from cae.core.hints import Hint, load_hints
from cae.core.photo import Colorizer, open_file, photos_in, png_bytes
from cae.core.text import Log
from cae.errors import CaeError
from cae.experiments.guided import METHODS, WORKING_SIZE, GuidedBaseline

DEFAULT_MODEL = "colorizer"
MODEL = "model"  # `--method`: the learned colorizer (the others are the hint baselines, METHODS)
PNG_LEVEL = 1


def guided_colorizer(method: str, working_size: int | None = None) -> GuidedBaseline:
    """The hint baseline `method` at `working_size` (None: the baselines' own)."""
    return GuidedBaseline(method, WORKING_SIZE if working_size is None else working_size)


def shipped_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The folder of shipped weights `name` ('colorizer' or 'reference'), usable as a run folder."""
    return runs.shipped_run(name)


def _save_png(t: torch.Tensor, path: Path) -> None:
    # zlib level 1, not Pillow's 6: a 12-megapixel photo encodes ~6x faster for a ~25% larger file
    runs.atomic_write_bytes(path, png_bytes(t, PNG_LEVEL))


def colorize_files(paths: Sequence[str | Path], out_dir: str | Path, model_dir: str | Path | None = None,
                   compare: bool = False, device: str = "auto", log: Log = print,
                   working_size: int | None = None, boost: float | None = None,
                   hints: str | Path | None = None, method: str = MODEL) -> int:
    """Colorize each image (a folder: each of its photos) into `out_dir/<stem>.png`; return how
    many files failed.

    `model_dir` is a colorize run folder (default: the shipped colorizer, or with `hints` the
    shipped guided colorizer). With `compare`,
    `<stem>_original.png` and `<stem>_gray.png` are written too. Unreadable files are reported
    on stderr as one line each and skipped. `working_size` overrides the run's
    `color.working_size` (0: native resolution), `boost` its `color.photo_boost`. Outputs that
    would overwrite an input or each other raise a CaeError first (`output_paths`).
    `hints` is a hints file (docs/guided.md) for the one photo given; `method` colorizes with the
    model ('model') or spreads the hints with a baseline ('levin', 'idw'; `working_size` then
    defaults to theirs).
    """
    outputs = output_paths(input_files(paths, Path(out_dir)), Path(out_dir), compare)  # before the model loads
    given = guide(hints, method, len(outputs))
    # a hints file without --model: the shipped guided colorizer, which follows them
    colorizer = guided_colorizer(method, working_size) if method != MODEL else \
        Colorizer.load(model_dir, device, boost, working_size, guided=hints is not None)
    colorizer.check_hints(given)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    failures = 0
    for p, targets in outputs.items():
        try:
            rgb, result = colorizer.colorize_image(open_file(p), given)  # transparency kept where it was
        except CaeError as e:  # named by its photo, as a file that cannot be read already is
            print(f"cae: error: {e if str(e).startswith(str(p)) else f'{p}: {e}'}", file=sys.stderr)
            failures += 1
            continue
        _save_png(result, targets[0])
        if compare:
            _save_png(rgb, targets[1])
            _save_png(luma(rgb.unsqueeze(0))[0], targets[2])
        log(f"{p} -> {targets[0]} ({rgb.shape[2]}x{rgb.shape[1]})")
    return failures


def guide(hints: str | Path | None, method: str, photos: int) -> list[Hint]:
    """The hints of a hints file for `photos` photos (one, when there is a file), checked before
    any work; a baseline `method` needs them."""
    if method != MODEL and method not in METHODS:
        raise CaeError(f"unknown method {method!r}; use one of {', '.join((MODEL, *METHODS))}")
    if hints is None:
        if method != MODEL:
            raise CaeError(f"--method {method} spreads the colours of hints: give --hints FILE (docs/guided.md)")
        return []
    if photos != 1:
        raise CaeError(f"a hints file is for one photo, and {photos} were given; colorize them one at a time")
    return load_hints(hints)


def input_files(paths: Sequence[str | Path], out_dir: Path) -> list[Path]:
    """The files to colorize: each file given, and a folder's photos (`photos_in`) in its place
    (a folder without any stays, to be reported as one); a folder that is also `out_dir` is
    refused (its outputs would join its photos)."""
    files = []
    for p in map(Path, paths):
        if not p.is_dir():
            files.append(p)
        elif p.resolve() == out_dir.resolve():
            raise CaeError(f"--out {out_dir} is the photo folder {p} itself; give another --out folder")
        else:
            files += photos_in(p) or [p]
    return files


def output_paths(paths: Sequence[str | Path], out_dir: Path, compare: bool) -> dict[Path, list[Path]]:
    """Each input (once, in order) -> the files it is written to: `<stem>.png`, and with `compare`
    `<stem>_original.png` and `<stem>_gray.png`. A CaeError if an output would overwrite an input
    or two inputs would write the same file, so that nothing is written and no photo is lost."""
    inputs = {Path(p).resolve(): Path(p) for p in paths}  # a file given twice is colorized once
    suffixes = ("", "_original", "_gray") if compare else ("",)
    outputs: dict[Path, list[Path]] = {source: [] for source in inputs.values()}
    writer: dict[Path, Path] = {}
    for source, targets in outputs.items():
        for suffix in suffixes:
            shown = out_dir / f"{source.stem}{suffix}.png"
            target = shown.resolve()
            if target in inputs:
                raise CaeError(f"writing {shown} would overwrite the input {inputs[target]}; give another --out folder")
            if target in writer:
                raise CaeError(f"{writer[target]} and {source} would both be written to {shown}; "
                               "colorize them into separate --out folders")
            writer[target] = source
            targets.append(shown)
    return outputs


def ship_run(run_dir: str | Path, name: str) -> Path:
    """Copy a finished run's weights and records into the package (`cae/weights/<name>/`).

    How the shipped weights were made: `ship_run("<run of cae train --config
    colorize-best>", "colorizer")` and `ship_run("<run of cae train --arch reference
    --epochs 10>", "reference")`.
    """
    run_dir = Path(run_dir)
    if not runs.is_finished(run_dir):
        raise CaeError(f"{run_dir} is not a finished run (no test_metrics.json); train it first")
    dest = runs.WEIGHTS / name
    runs.copy_files(run_dir, dest, runs.SHIPPED_FILES)
    return dest


