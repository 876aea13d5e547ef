"""A colorizer scored on a folder of real photos: each photo against itself (PSNR of the
colorized photo minus PSNR of its gray copy, and colorfulness), as CSV, JSON and a panel."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from cae.core.data import luma
from cae.core.photo import Colorizer, photo_paths, read_image
from cae.core.text import Log
from cae.errors import CaeError

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


def evaluate_photos(photos: str | Path, out: str | Path, model_dir: str | Path,
                    working_size: int | None = None, device: str = "cpu", panel: int = 4,
                    log: Log = print, boost: float | None = None) -> dict:
    """Colorize every photo of a folder and score it against the photo itself: writes
    photos.csv, photos.json (per photo and summary) and photos.png (original / gray / colorized
    for the `panel` photos with the lowest and highest gain), decoded as `cae colorize` decodes
    photos (`boost` overrides the run's `color.photo_boost`). Returns the JSON's content."""
    from cae.core.runs import write_csv, write_json

    paths, panel_path = photo_paths(photos), Path(out) / "photos.png"
    if Path(out).resolve() == Path(photos).resolve():  # photos.png would overwrite, or join, the photos
        raise CaeError(f"--out {out} is the photo folder itself; give another --out folder")
    colorizer = Colorizer.load(model_dir, device, boost, working_size)
    size = colorizer.working_size
    rows, shown = [], {}
    for p in paths:
        rgb = read_image(p)
        pred = colorizer(rgb)
        rows.append({"name": p.name, "width": rgb.shape[2], "height": rgb.shape[1], **score_photo(pred, rgb)})
        shown[p.name] = (_thumb(rgb), _thumb(pred))
    result = {"folder": str(photos), "working_size": size, "boost": _boost(colorizer.model), "summary": summarize_photos(rows), "photos": rows}
    out = Path(out)
    write_json(out / "photos.json", result)
    write_csv(out / "photos.csv", rows, list(rows[0]))
    order = sorted(rows, key=lambda r: r["gain_db"])
    picks = order[:(panel + 1) // 2] + order[len(order) - panel // 2:] if len(order) > panel else order
    _save_panel([(r["name"], r["gain_db"], *shown[r["name"]]) for r in picks], panel_path)
    s = result["summary"]
    log(f"photos: {s['photos']} in {photos}, working size {size}: mean gain {s['mean_gain_db']:+.2f} dB over gray, "
        f"worst {s['worst_gain_db']:+.2f} dB ({s['worst']}), colorfulness {s['colorfulness_ratio']:.0%} of the truth's")
    return result


def _boost(model: torch.nn.Module) -> float | None:
    return model.boost.item() if hasattr(model, "boost") else None


def _thumb(rgb: torch.Tensor) -> torch.Tensor:
    """A copy PANEL_HEIGHT pixels high (antialiased), for the panel."""
    h, w = rgb.shape[-2:]
    size = (PANEL_HEIGHT, max(1, round(w * PANEL_HEIGHT / h)))
    return F.interpolate(rgb.unsqueeze(0), size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def _save_panel(items: list[tuple], path: Path) -> None:
    """One column per photo (name, gain, original, colorized): original, gray, colorized rows."""
    from cae.core.plots import figure, save_figure

    fig = figure(figsize=(2.4 * len(items), 5.4))
    axes = fig.subplots(3, len(items), squeeze=False)
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
    save_figure(fig, path, dpi=100, bbox_inches=None)
