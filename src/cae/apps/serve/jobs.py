"""What each request computes, as plain functions run in worker threads (never on the event loop).

Each returns the JSON answer the page shows; a problem the user can fix is a `CaeError`.

Memory: a job reserves an estimate of what it will hold (bytes a pixel of its upload, below)
from the `MemoryBudget` before it decodes anything, so the jobs in flight never hold more than
the budget together. A photo is colorized by `Colorizer.colorize_8bit` (luma and result in
strips: no full-size float RGB), answered with display-sized previews, and its full-resolution
PNG goes to the `ResultStore` on disk, fetched by its own route.
"""

from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from PIL import Image

from cae.apps.serve.images import cifar_sized, image_data_url, png_data_url, preview
from cae.apps.serve.models import LoadedModel, ModelCache, RunsIndex, colorizer_of, reconstruct
from cae.apps.serve.results import report_url
from cae.apps.serve.samples import SampleGrid
from cae.apps.serve.store import MemoryBudget, ResultStore
from cae.core.data import luma
from cae.core.metrics import psnr_from_mse
from cae.core.photo import ImageTooLarge, open_image, rgb_of
from cae.errors import CaeError

# What a job holds per pixel of its image, on top of the process's base (models, torch); the
# load test (benchmarks/load_serve.py --big) measures it, docs/serve.md derives the bound.
CHROMA_BYTES_PER_PIXEL = 16  # decoded image 4, float luma 4, 8-bit result 4, an alpha channel 4 + 1
NATIVE_BYTES_PER_PIXEL = 40  # a chroma net at native size also holds its padded input and output
RGB_BYTES_PER_PIXEL = 64  # a net predicting RGB sees the float RGB image: several full-size copies
RECONSTRUCT_BYTES_PER_PIXEL = 12  # decoded, converted to RGB, the centre square cut out
SERVER_PATH = re.compile(r"""(?<![\w.])(?:~|[A-Za-z]:)?[/\\][^\s'"(),;]+""")  # /x/y, ~/x, C:\x
log = logging.getLogger("cae.serve")


@dataclass
class ServeConfig:
    """What every request needs: the model index, loaded models, the sample grid, the limits, the
    results kept for download and the memory budget of the jobs."""

    index: RunsIndex
    cache: ModelCache
    samples: SampleGrid
    max_bytes: int
    max_pixels: int
    store: ResultStore
    budget: MemoryBudget


def public_text(message: str) -> str:
    """`message` with the server's file paths replaced, for the page; the full text is logged."""
    shown = SERVER_PATH.sub("<server path>", message)
    if shown != message:
        log.warning("%s", message)
    return shown


def models_answer(cfg: ServeConfig) -> dict:
    """The page's selects, report links and limits."""
    reports = cfg.index.reports()
    runs_name = cfg.index.runs_dir.name if cfg.index.runs_dir else ""
    return {
        **{task: [{"id": e.id, "label": e.label} for e in cfg.index.listed(task)]
           for task in ("colorize", "guide", "reconstruct")},
        "reports": [{"name": name or runs_name, "url": report_url(name)} for name in reports],
        "limits": {"bytes": cfg.max_bytes, "pixels": cfg.max_pixels},
    }


def samples_answer(cfg: ServeConfig) -> dict:
    """The CIFAR-10 grid as small PNGs, or the reason there is none."""
    s = cfg.samples.get()
    if s.images is None:
        return {"available": False, "message": public_text(s.message), "images": []}
    images = [{"index": i, "label": label, "src": png_data_url(img.float().div(255))}
              for i, (img, label) in enumerate(zip(s.images, s.labels))]
    return {"available": True, "message": "", "images": images}


def colorize_answer(cfg: ServeConfig, model_id: str, upload: BinaryIO, filename: str) -> dict:
    """Colorize an uploaded photo at full resolution: previews of the gray input, the result and
    the original, and the route of the full-resolution PNG."""
    entry = cfg.index.find(model_id, "colorize")
    model = cfg.cache.get(entry)
    colorizer = colorizer_of(model)
    data = read_upload(upload)
    with cfg.budget.reserve(job_bytes(cfg, data, colorize_bytes_per_pixel(model), f"the model {entry.id}")):
        img = open_image(data, cfg.max_pixels)
        del data
        t0 = time.perf_counter()
        result = colorizer.colorize_8bit(img)  # transparent where the photo was, as in `cae colorize`
        seconds = time.perf_counter() - t0
        original = preview(img)
        width, height = img.size
        del img
        name = f"{safe_stem(filename)}-colorized.png"
        key = cfg.store.put(result, name)
        shown = preview(result)
        del result
    gray = luma(rgb_of(original).unsqueeze(0))[0]
    return {"model": entry.id, "width": width, "height": height, "seconds": round(seconds, 3),
            "filename": name, "download": f"/api/result/{key}", "result": image_data_url(shown),
            "gray": png_data_url(gray), "original": image_data_url(original)}


def read_upload(upload: BinaryIO) -> bytes:
    """The uploaded file's bytes, read in the job's thread (a waiting request keeps its upload in
    the multipart parser's spool file, on disk beyond 1 MB)."""
    upload.seek(0)
    return upload.read()


def colorize_bytes_per_pixel(model: LoadedModel) -> int:
    """What colorizing holds per pixel with this model (see the constants above)."""
    colorizer = colorizer_of(model)
    if colorizer.task.target == "rgb":
        return RGB_BYTES_PER_PIXEL
    return CHROMA_BYTES_PER_PIXEL if colorizer.working_size > 0 else NATIVE_BYTES_PER_PIXEL


def header_pixels(data: bytes) -> int:
    """The pixel count in an image file's header (nothing decoded); 0 when unreadable (`open_image`
    then says why)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.width * img.height
    except Exception:  # noqa: BLE001 - any failure is reported by open_image with its message
        return 0


def job_bytes(cfg: ServeConfig, data: bytes, bytes_per_pixel: int, what: str) -> int:
    """The memory a job on `data` reserves; an image the budget cannot hold at all is refused (413)."""
    pixels = header_pixels(data)
    if pixels > cfg.max_pixels:
        return 0  # open_image refuses it, naming the pixel limit
    if pixels * bytes_per_pixel > cfg.budget.total:
        limit = cfg.budget.total // bytes_per_pixel
        raise ImageTooLarge(f"the image has {pixels:,} pixels; {what} needs {bytes_per_pixel} bytes a pixel, so "
                            f"this server takes at most {limit:,} pixels for it: downscale the photo or choose "
                            "a model that works at a smaller scale")
    return pixels * bytes_per_pixel


def reconstruct_answer(cfg: ServeConfig, model_id: str, position: str | None, upload: BinaryIO | None,
                       filename: str) -> dict:
    """Reconstruct a grid image (`position`) or an uploaded photo cut to 32x32; the latent code too."""
    entry = cfg.index.find(model_id, "reconstruct")
    rgb, source = reconstruct_input(cfg, position, upload, filename)
    model = cfg.cache.get(entry)
    r = reconstruct(model, rgb)
    return {"model": entry.id, "source": source, "input": png_data_url(rgb), "output": png_data_url(r.output),
            "mse": r.mse, "psnr": round(psnr_from_mse(r.mse), 2) if r.mse > 0 else None,
            "latent": model.latent, "channels": latent_images(r.latent)}


def reconstruct_input(cfg: ServeConfig, position: str | None, upload: BinaryIO | None,
                      filename: str) -> tuple[torch.Tensor, str]:
    """The (3,32,32) image to reconstruct and a caption saying where it came from."""
    if upload is not None:
        data = read_upload(upload)
        with cfg.budget.reserve(job_bytes(cfg, data, RECONSTRUCT_BYTES_PER_PIXEL, "cutting it to 32x32")):
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
