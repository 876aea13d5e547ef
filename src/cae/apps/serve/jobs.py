"""What each request computes, as plain functions run in worker threads (never on the event loop).

Each returns the JSON answer the page shows; a problem the user can fix is a `CaeError`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cae.apps.serve.images import cifar_sized, png_data_url
from cae.apps.serve.models import ModelCache, colorize_rgb, find_model, list_models, reconstruct
from cae.apps.serve.results import find_reports, report_url
from cae.apps.serve.samples import SampleGrid
from cae.core.data import luma
from cae.core.photo import alpha_of, open_image, rgb_of
from cae.errors import CaeError
from cae.core.metrics import psnr_from_mse


@dataclass
class ServeConfig:
    """What every request needs: where runs are, the loaded models, the sample grid, the limits."""

    runs_dir: Path | None
    cache: ModelCache
    samples: SampleGrid
    max_bytes: int
    max_pixels: int


def models_answer(cfg: ServeConfig) -> dict:
    """The page's selects, report links and limits."""
    entries = list_models(cfg.runs_dir)
    reports = find_reports(cfg.runs_dir)
    return {
        **{task: [{"id": e.id, "label": e.label} for e in entries if e.task == task]
           for task in ("colorize", "reconstruct")},
        "reports": [{"name": name or (cfg.runs_dir.name if cfg.runs_dir else ""), "url": report_url(name)}
                    for name in reports],
        "limits": {"bytes": cfg.max_bytes, "pixels": cfg.max_pixels},
    }


def samples_answer(cfg: ServeConfig) -> dict:
    """The CIFAR-10 grid as small PNGs, or the reason there is none."""
    s = cfg.samples.get()
    if s.images is None:
        return {"available": False, "message": s.message, "images": []}
    images = [{"index": i, "label": label, "src": png_data_url(img.float().div(255))}
              for i, (img, label) in enumerate(zip(s.images, s.labels))]
    return {"available": True, "message": "", "images": images}


def colorize_answer(cfg: ServeConfig, model_id: str, data: bytes, filename: str) -> dict:
    """Colorize an uploaded photo at full resolution: the gray input, the result, the original."""
    entry = find_model(cfg.runs_dir, model_id, "colorize")
    img = open_image(data, cfg.max_pixels)
    rgb, alpha = rgb_of(img), alpha_of(img)
    model = cfg.cache.get(entry)
    t0 = time.perf_counter()
    result = colorize_rgb(model, rgb)
    seconds = time.perf_counter() - t0
    if alpha is not None:  # a transparent photo stays transparent where it was, as in `cae colorize`
        result = torch.cat([result, alpha])
    return {"model": entry.id, "width": rgb.shape[2], "height": rgb.shape[1], "seconds": round(seconds, 3),
            "filename": f"{safe_stem(filename)}-colorized.png", "result": png_data_url(result),
            "gray": png_data_url(luma(rgb.unsqueeze(0))[0]), "original": png_data_url(rgb)}


def reconstruct_answer(cfg: ServeConfig, model_id: str, position: str | None, data: bytes | None,
                       filename: str) -> dict:
    """Reconstruct a grid image (`position`) or an uploaded photo cut to 32x32; the latent code too."""
    entry = find_model(cfg.runs_dir, model_id, "reconstruct")
    rgb, source = reconstruct_input(cfg, position, data, filename)
    model = cfg.cache.get(entry)
    r = reconstruct(model, rgb)
    return {"model": entry.id, "source": source, "input": png_data_url(rgb), "output": png_data_url(r.output),
            "mse": r.mse, "psnr": round(psnr_from_mse(r.mse), 2) if r.mse > 0 else None,
            "latent": model.latent, "channels": latent_images(r.latent)}


def reconstruct_input(cfg: ServeConfig, position: str | None, data: bytes | None,
                      filename: str) -> tuple[torch.Tensor, str]:
    """The (3,32,32) image to reconstruct and a caption saying where it came from."""
    if data is not None:
        return cifar_sized(open_image(data, cfg.max_pixels)), f"{filename or 'upload'} (centre, 32x32)"
    if position is None or not position.strip().isdigit():
        raise CaeError("choose a CIFAR-10 image from the grid or upload a photo")
    samples = cfg.samples.get()
    i = int(position)
    image = samples.image(i)
    return image, f"CIFAR-10 test image #{i} ({samples.labels[i]})"


def latent_images(latent: torch.Tensor | None) -> list[str]:
    """Each latent channel as a grayscale PNG, stretched to its own range (a flat one is black)."""
    if latent is None:
        return []
    lo = latent.amin(dim=(1, 2), keepdim=True)
    span = latent.amax(dim=(1, 2), keepdim=True) - lo
    scaled = torch.where(span > 0, (latent - lo) / span.clamp_min(1e-12), torch.zeros_like(latent))
    return [png_data_url(ch.unsqueeze(0)) for ch in scaled]


def safe_stem(filename: str) -> str:
    """A download name from the uploaded file's name: letters, digits, '-', '_' and '.' only."""
    stem = Path(filename or "photo").stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:60] or "photo"
