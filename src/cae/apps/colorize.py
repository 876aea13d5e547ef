"""Colorize photos of any size with a trained colorization run (or the weights shipped with cae).

Each file is read with Pillow (PNG, JPEG, ...; modes RGB, L, LA, RGBA, P, CMYK, 16-bit gray),
turned into BT.601 luma, run through the fully convolutional network (reflect-padded to a
multiple of its total stride, and in overlapping tiles when large), cropped back and written
as `<stem>.png`. A file that cannot be read is reported on one line and the others go on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from cae.core.color import merge_chroma
from cae.core.data import luma
from cae.core.text import Log
from cae.errors import CaeError

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"  # cae/weights: shipped run folders
DEFAULT_MODEL = "colorizer"
TILE = 512  # tile side (output pixels) for large images; memory stays ~100 MB for unet16
OVERLAP = 32  # context margin around each tile, beyond the nets' receptive field radius
MAX_PIXELS = 64_000_000  # larger images are refused (decoding alone would take GBs)


def shipped_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The folder of shipped weights `name` ('colorizer' or 'reference'), usable as a run folder."""
    d = WEIGHTS / name
    if not (d / "best.pt").is_file():
        have = sorted(p.name for p in WEIGHTS.iterdir() if (p / "best.pt").is_file()) if WEIGHTS.is_dir() else []
        raise CaeError(f"no shipped weights named {name!r} in {WEIGHTS}; available: {', '.join(have) or 'none'}")
    return d


def total_stride(spec: str) -> int:
    """The factor both image sides must be divisible by for architecture `spec`."""
    from cae.core.spec import parse, unet_width

    if unet_width(spec):
        from cae.core.unet import STRIDE

        return STRIDE
    enc, _ = parse(spec)
    s = 1
    for layer in enc:
        s *= layer.scale if layer.kind == "pool" else layer.stride if layer.kind == "conv" else 1
    return s


def read_image(path: Path) -> torch.Tensor:
    """RGB (3,H,W) float in [0, 1] from an image file; any failure is a one-line CaeError."""
    if path.is_dir():
        raise CaeError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise CaeError(f"{path}: {w}x{h} is larger than the limit of {MAX_PIXELS:,} pixels; downscale it first")
            img = ImageOps.exif_transpose(img)  # photos from cameras: apply the stored rotation
            img.load()  # decode now: a truncated file fails here, not later
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                # 16-bit gray: keep the precision (convert('L') would clip values above 255)
                a = np.asarray(img, dtype=np.float32) / 65535.0
                return torch.from_numpy(np.clip(a, 0, 1)).unsqueeze(0).expand(3, -1, -1).contiguous()
            a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0  # L, LA, RGBA, P, CMYK, ...
    except CaeError:
        raise
    except FileNotFoundError:
        raise CaeError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise CaeError(f"{path}: not an image Pillow can read (empty or unknown format)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise CaeError(f"{path}: cannot decode the image ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                       "the file may be truncated or corrupt") from None
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def _pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    # reflect needs the pad to be smaller than the side; tiny images fall back to edge replication
    mode = "reflect" if max(top, bottom) < x.shape[-2] and max(left, right) < x.shape[-1] else "replicate"
    return F.pad(x, (left, right, top, bottom), mode=mode)


def predict(model: torch.nn.Module, task, rgb: torch.Tensor, stride: int, tile: int = TILE,  # noqa: ANN001
            overlap: int = OVERLAP) -> torch.Tensor:
    """The colorized RGB (3,H,W) in [0, 1] of one image (3,H,W), the luma of `rgb` kept."""
    device = next(model.parameters()).device
    _, h, w = rgb.shape
    x = rgb.unsqueeze(0).to(device)
    tile = max(stride, tile // stride * stride)
    m = -(-overlap // stride) * stride  # margin, a multiple of the stride so tiles stay aligned
    # pad to a multiple of the tile grid (or of the stride for a single tile), plus the margins
    th, tw = (-(-h // tile) * tile, -(-w // tile) * tile) if max(h, w) > tile else \
        (-(-h // stride) * stride, -(-w // stride) * stride)
    single = max(h, w) <= tile
    mm = 0 if single else m
    xp = _pad(x, mm, th - h + mm, mm, tw - w + mm)
    outs = torch.zeros(1, task.out_channels, th, tw, device=device)
    with torch.inference_mode():
        step_h, step_w = (th, tw) if single else (tile, tile)
        for i in range(0, th, step_h):
            for j in range(0, tw, step_w):
                patch = xp[:, :, i:i + step_h + 2 * mm, j:j + step_w + 2 * mm]
                y = model(task.network_input(patch)).float()
                outs[:, :, i:i + step_h, j:j + step_w] = y[:, :, mm:mm + step_h, mm:mm + step_w]
        out = outs[:, :, :h, :w]
        if task.target != "rgb":
            out = merge_chroma(luma(x), out, task.target)
    return out[0].clamp(0, 1).cpu()


def _save_png(t: torch.Tensor, path: Path) -> None:
    from cae.core.runs import atomic_write_bytes
    import io

    a = (t.clamp(0, 1).mul(255).round().to(torch.uint8))
    arr = a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def colorize_files(paths: Sequence[str | Path], out_dir: str | Path, model_dir: str | Path | None = None,
                   compare: bool = False, device: str = "auto", log: Log = print) -> int:
    """Colorize each image into `out_dir/<stem>.png`; return how many files failed.

    `model_dir` is a colorize run folder (default: the shipped colorizer). With `compare`,
    `<stem>_original.png` and `<stem>_gray.png` are written too. Unreadable files are reported
    on stderr as one line each and skipped.
    """
    from cae.core.train import load_run

    model_dir = Path(model_dir) if model_dir else shipped_model_dir(DEFAULT_MODEL)
    model, cfg, task = load_run(model_dir, device)
    if task.kind != "colorize":
        raise CaeError(f"{model_dir} is a {task.kind} run, not a colorizer; pass a run trained with --task colorize")
    stride = total_stride(cfg.arch)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for p in map(Path, paths):
        try:
            rgb = read_image(p)
            result = predict(model, task, rgb, stride)
        except CaeError as e:
            print(f"cae: error: {e}", file=sys.stderr)
            failures += 1
            continue
        target = out_dir / f"{p.stem}.png"
        _save_png(result, target)
        if compare:
            _save_png(rgb, out_dir / f"{p.stem}_original.png")
            _save_png(luma(rgb.unsqueeze(0))[0], out_dir / f"{p.stem}_gray.png")
        log(f"{p} -> {target} ({rgb.shape[2]}x{rgb.shape[1]})")
    return failures


SHIPPED_FILES = ("best.pt", "config.toml", "test_metrics.json", "normalization.json", "chroma_gain.json")


def ship_run(run_dir: str | Path, name: str) -> Path:
    """Copy a finished run's weights and records into the package (`cae/weights/<name>/`).

    How the shipped weights were made: `ship_run("<study>/best", "colorizer")` and
    `ship_run("<run of cae train --arch reference --epochs 10>", "reference")`.
    """
    from cae.core.runs import atomic_write_bytes, is_finished

    run_dir = Path(run_dir)
    if not is_finished(run_dir):
        raise CaeError(f"{run_dir} is not a finished run (no test_metrics.json); train it first")
    dest = WEIGHTS / name
    for f in SHIPPED_FILES:
        if (run_dir / f).is_file():
            atomic_write_bytes(dest / f, (run_dir / f).read_bytes())
    return dest
