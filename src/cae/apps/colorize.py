"""Colorize photos of any size with a trained colorization run (or the weights shipped with cae).

Each file is read with Pillow (PNG, JPEG, ...; modes RGB, L, LA, RGBA, P, CMYK, 16-bit gray),
turned into BT.601 luma, run through the fully convolutional network (reflect-padded to a
multiple of its total stride, and in overlapping tiles when large), cropped back and written
as `<stem>.png`. A file that cannot be read is reported on one line and the others go on.

Working scale: a colorizer trained on 32x32 images has learned what colour an object is when
the object fills a few dozen pixels; at a photo's native resolution it sees texture only. So
the chrominance is predicted on a copy downscaled (antialiased) to a short side of
`working_size` pixels (the run's `color.working_size`, 0 = native), upsampled (bilinear; the
eye tolerates blurred chroma) and merged with the photo's own full-resolution luma, which is
kept exactly. This is also what makes a 12-megapixel photo fast.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from cae.core.color import chroma, merge_chroma
from cae.core.data import luma
from cae.core.text import Log
from cae.errors import CaeError

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"  # cae/weights: shipped run folders
DEFAULT_MODEL = "colorizer"
TILE = 512  # tile side (output pixels) for large images; memory stays ~100 MB for unet16
OVERLAP = 32  # context margin around each tile, beyond the nets' receptive field radius
PNG_LEVEL = 3
STRIP = 256  # rows merged at a time at full size
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
            overlap: int = OVERLAP, working_size: int = 0) -> torch.Tensor:
    """The colorized RGB (3,H,W) in [0, 1] of one image (3,H,W), the luma of `rgb` kept.

    `working_size` > 0: the network runs on a copy whose short side is that many pixels (only
    when the image is larger) and its chrominance is upsampled to the full size."""
    device = next(model.parameters()).device
    _, h, w = rgb.shape
    x = rgb.unsqueeze(0).to(device)
    y = luma(x)
    # a chroma net sees only the luma: shrink that one channel (as gray RGB, whose luma it is)
    small = downscale(x, working_size) if task.target == "rgb" else \
        downscale(y, working_size).expand(-1, 3, -1, -1)
    out = _network_output(model, task, small, stride, tile, overlap)
    if task.target == "rgb" and small.shape[-2:] == x.shape[-2:]:
        return out[0].clamp(0, 1).cpu()
    space = "ycbcr" if task.target == "rgb" else task.target
    return _merge_upsampled(y, chroma(out, space) if task.target == "rgb" else out, space)[0].cpu()


def _merge_upsampled(y: torch.Tensor, c: torch.Tensor, space: str, rows: int = STRIP) -> torch.Tensor:
    """RGB (1,3,H,W) in [0, 1] from full-size luma (1,1,H,W) and chroma (1,2,h,w) upsampled
    bilinearly (as F.interpolate, align_corners=False), in strips of `rows` rows: a 12-megapixel
    photo never holds its full-size chroma and merge temporaries at once."""
    h, w = y.shape[-2:]
    c = F.interpolate(c, size=(c.shape[-2], w), mode="bilinear", align_corners=False)  # widths first: cheap
    src = ((torch.arange(h, dtype=torch.float64) + 0.5) * (c.shape[-2] / h) - 0.5).clamp(min=0)
    lo = src.floor().long().clamp(max=c.shape[-2] - 1)
    hi, frac = (lo + 1).clamp(max=c.shape[-2] - 1), (src - lo).float().view(1, 1, -1, 1)
    out = torch.empty(1, 3, h, w, device=y.device)
    for i in range(0, h, rows):
        j = slice(i, i + rows)
        cs = torch.lerp(c[:, :, lo[j]], c[:, :, hi[j]], frac[:, :, j])
        out[:, :, j] = merge_chroma(y[:, :, j], cs, space).clamp_(0, 1)
    return out


def downscale(x: torch.Tensor, short_side: int) -> torch.Tensor:
    """`x` (N,C,H,W) resized (antialiased) so its short side is `short_side`; unchanged when it
    is already that small or `short_side` is 0."""
    h, w = x.shape[-2:]
    if short_side <= 0 or min(h, w) <= short_side:
        return x
    f = short_side / min(h, w)
    size = (max(1, round(h * f)), max(1, round(w * f)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def _network_output(model: torch.nn.Module, task, x: torch.Tensor, stride: int, tile: int,  # noqa: ANN001
                    overlap: int) -> torch.Tensor:
    """The network's output (1,C,h,w) (RGB or chroma) for an image (1,3,h,w): padded to the
    stride, in overlapping tiles when larger than `tile`, cropped back."""
    _, _, h, w = x.shape
    device = x.device
    tile = max(stride, tile // stride * stride)
    m = -(-overlap // stride) * stride  # margin, a multiple of the stride so tiles stay aligned
    # pad to a multiple of the tile grid (or of the stride for a single tile), plus the margins
    th, tw = (-(-h // tile) * tile, -(-w // tile) * tile) if max(h, w) > tile else \
        (-(-h // stride) * stride, -(-w // stride) * stride)
    single = max(h, w) <= tile
    mm = 0 if single else m
    xp = _pad(x, mm, th - h + mm, mm, tw - w + mm)
    outs = torch.zeros(1, task.pred_channels, th, tw, device=device)
    with torch.inference_mode():
        step_h, step_w = (th, tw) if single else (tile, tile)
        for i in range(0, th, step_h):
            for j in range(0, tw, step_w):
                patch = xp[:, :, i:i + step_h + 2 * mm, j:j + step_w + 2 * mm]
                y = model(task.network_input(patch)).float()
                outs[:, :, i:i + step_h, j:j + step_w] = y[:, :, mm:mm + step_h, mm:mm + step_w]
    return outs[:, :, :h, :w]


def _save_png(t: torch.Tensor, path: Path) -> None:
    from cae.core.runs import atomic_write_bytes
    import io

    a = (t.clamp(0, 1).mul(255).round().to(torch.uint8))
    arr = a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    # zlib level 3, not Pillow's 6: a 12-megapixel photo encodes ~5x faster for a ~10% larger file
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=PNG_LEVEL)
    atomic_write_bytes(path, buf.getvalue())


def load_colorizer(model_dir: str | Path | None, device: str = "auto"):  # noqa: ANN201
    """(model, config, task) of a colorize run folder (default: the shipped colorizer)."""
    from cae.core.train import load_run

    model_dir = Path(model_dir) if model_dir else shipped_model_dir(DEFAULT_MODEL)
    model, cfg, task = load_run(model_dir, device)
    if task.kind != "colorize":
        raise CaeError(f"{model_dir} is a {task.kind} run, not a colorizer; pass a run trained with --task colorize")
    return model, cfg, task


def colorize_files(paths: Sequence[str | Path], out_dir: str | Path, model_dir: str | Path | None = None,
                   compare: bool = False, device: str = "auto", log: Log = print,
                   working_size: int | None = None) -> int:
    """Colorize each image into `out_dir/<stem>.png`; return how many files failed.

    `model_dir` is a colorize run folder (default: the shipped colorizer). With `compare`,
    `<stem>_original.png` and `<stem>_gray.png` are written too. Unreadable files are reported
    on stderr as one line each and skipped. `working_size` overrides the run's
    `color.working_size` (0: native resolution).
    """
    model, cfg, task = load_colorizer(model_dir, device)
    stride = total_stride(cfg.arch)
    size = cfg.color.working_size if working_size is None else working_size
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for p in map(Path, paths):
        try:
            rgb = read_image(p)
            result = predict(model, task, rgb, stride, working_size=size)
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


SHIPPED_FILES = ("best.pt", "config.toml", "test_metrics.json", "normalization.json", "decoding.json")


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


# ----------------------------------------------------------------------------- real photos
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
PHOTOS_FOLDER = "kodak-dev"  # looked for next to the CIFAR-10 folder when no folder is given
PANEL_HEIGHT = 160  # pixels per photo in photos.png


def default_photos_dir() -> Path | None:
    """$CAE_PHOTOS_DIR, else a `kodak-dev` folder next to the CIFAR-10 data; None if neither exists."""
    import os

    from cae.core.data import resolve_data_dir

    if os.environ.get("CAE_PHOTOS_DIR"):
        return Path(os.environ["CAE_PHOTOS_DIR"])
    try:
        d = resolve_data_dir(download=False).parent / PHOTOS_FOLDER
    except CaeError:
        return None
    return d if d.is_dir() else None


def photo_paths(folder: str | Path) -> list[Path]:
    """The image files of a folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CaeError(f"photo folder {folder} does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not paths:
        raise CaeError(f"photo folder {folder} holds no images ({', '.join(PHOTO_SUFFIXES)})")
    return paths


def score_photo(pred: torch.Tensor, rgb: torch.Tensor) -> dict:
    """PSNR of a colorization and of the gray copy against the photo (3,H,W), and colorfulness."""
    from cae.core.metrics import colorfulness, psnr_from_mse

    gray = luma(rgb.unsqueeze(0)).expand(-1, 3, -1, -1)[0]
    p, g = psnr_from_mse(torch.mean((pred - rgb) ** 2).item()), psnr_from_mse(torch.mean((gray - rgb) ** 2).item())
    cp, ct = colorfulness(pred.unsqueeze(0)).item(), colorfulness(rgb.unsqueeze(0)).item()
    return {"psnr": p, "psnr_gray": g, "gain_db": p - g, "colorfulness": cp, "colorfulness_truth": ct,
            "colorfulness_ratio": cp / ct if ct else math.nan}


def summarize_photos(rows: list[dict]) -> dict:
    """Mean and worst PSNR gain over gray, and colorfulness as mean prediction / mean truth."""
    worst, best = min(rows, key=lambda r: r["gain_db"]), max(rows, key=lambda r: r["gain_db"])
    truth = sum(r["colorfulness_truth"] for r in rows)
    return {"photos": len(rows), "mean_gain_db": sum(r["gain_db"] for r in rows) / len(rows),
            "worst_gain_db": worst["gain_db"], "worst": worst["name"], "best_gain_db": best["gain_db"],
            "best": best["name"], "below_gray": sum(r["gain_db"] < 0 for r in rows),
            "colorfulness_ratio": sum(r["colorfulness"] for r in rows) / truth if truth else math.nan}


def evaluate_photos(photos: str | Path, out: str | Path, model_dir: str | Path | None = None,
                    working_size: int | None = None, device: str = "cpu", panel: int = 4,
                    log: Log = print) -> dict:
    """Colorize every photo of a folder and score it against the photo itself: writes
    photos.csv, photos.json (per photo and summary) and photos.png (original / gray / colorized
    for the `panel` photos with the lowest and highest gain). Returns the JSON's content."""
    from cae.core.runs import atomic_write_text, write_json

    model, cfg, task = load_colorizer(model_dir, device)
    size = cfg.color.working_size if working_size is None else working_size
    rows, shown = [], {}
    for p in photo_paths(photos):
        rgb = read_image(p)
        pred = predict(model, task, rgb, total_stride(cfg.arch), working_size=size)
        rows.append({"name": p.name, "width": rgb.shape[2], "height": rgb.shape[1], **score_photo(pred, rgb)})
        shown[p.name] = (_thumb(rgb), _thumb(pred))
    result = {"folder": str(photos), "working_size": size, "summary": summarize_photos(rows), "photos": rows}
    out = Path(out)
    write_json(out / "photos.json", result)
    atomic_write_text(out / "photos.csv", _photos_csv(rows))
    order = sorted(rows, key=lambda r: r["gain_db"])
    picks = order[:(panel + 1) // 2] + order[len(order) - panel // 2:] if len(order) > panel else order
    _save_panel([(r["name"], r["gain_db"], *shown[r["name"]]) for r in picks], out / "photos.png")
    s = result["summary"]
    log(f"photos: {s['photos']} in {photos}, working size {size}: mean gain {s['mean_gain_db']:+.2f} dB over gray, "
        f"worst {s['worst_gain_db']:+.2f} dB ({s['worst']}), colorfulness {s['colorfulness_ratio']:.0%} of the truth's")
    return result


def _photos_csv(rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _thumb(rgb: torch.Tensor) -> torch.Tensor:
    """A copy PANEL_HEIGHT pixels high (antialiased), for the panel."""
    h, w = rgb.shape[-2:]
    size = (PANEL_HEIGHT, max(1, round(w * PANEL_HEIGHT / h)))
    return F.interpolate(rgb.unsqueeze(0), size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def _save_panel(items: list[tuple], path: Path) -> None:
    """One column per photo (name, gain, original, colorized): original, gray, colorized rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(items), figsize=(2.4 * len(items), 5.4), squeeze=False)
    for c, (name, gain, orig, pred) in enumerate(items):
        gray = luma(orig.unsqueeze(0))[0].expand(3, -1, -1)
        for r, (img, label) in enumerate(((orig, "original"), (gray, "gray"), (pred, "colorized"))):
            ax = axes[r][c]
            ax.imshow(img.clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label)
        axes[0][c].set_title(f"{name}\n{gain:+.2f} dB vs gray", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = __import__("io").BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    from cae.core.runs import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())
