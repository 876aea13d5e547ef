"""Images to PNG for the page, display-sized previews, and an upload cut to CIFAR-10's size.

Uploads are decoded by `cae.core.photo.open_image` and `rgb_of`, as `cae colorize` decodes files:
the same modes, pixel limit and one-line messages, which name no server path.
"""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image, ImageOps

from cae.apps.serve.store import PNG_COMPRESS_LEVEL
from cae.core.photo import png_bytes, rgb_of, to_pil, white_level

PREVIEW_SIDE = 1024  # the long side of the previews in an answer; the full result is downloaded


def cifar_sized(img: Image.Image, side: int = 32) -> torch.Tensor:
    """The centre square of a photo scaled to `side` x `side` (what a CIFAR-10 model was trained on)."""
    rgb = img.convert("RGB") if white_level(img) is None else to_pil(rgb_of(img))
    small = ImageOps.fit(rgb, (side, side), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return rgb_of(small)


def png_data_url(t: torch.Tensor) -> str:
    """A PNG `data:` URL, so one JSON answer carries every image of a result."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(t, PNG_COMPRESS_LEVEL)).decode("ascii")


def image_data_url(img: Image.Image) -> str:
    """A PNG `data:` URL of an 8-bit Pillow image."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def preview(img: Image.Image, side: int = PREVIEW_SIDE) -> Image.Image:
    """An 8-bit copy of a decoded image whose long side is at most `side` (antialiased; the
    transparency kept); deeper gray is read on its own scale (`white_level`) as for colorizing."""
    white = white_level(img)
    if white is not None:
        return to_pil(rgb_of(shrink(img if img.mode in ("I", "F") else img.convert("I"), side), white)[:1])
    if img.mode not in ("RGB", "RGBA", "L", "LA"):
        img = img.convert("RGBA" if "transparency" in img.info or "A" in img.getbands() else "RGB")
    return shrink(img, side)


def shrink(img: Image.Image, side: int) -> Image.Image:
    """`img` scaled down (Lanczos) to a long side of `side`; itself when already that small."""
    w, h = img.size
    if max(w, h) <= side:
        return img
    f = side / max(w, h)
    # reducing_gap: first a cheap box reduction by an integer factor, then Lanczos on the small copy
    return img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.LANCZOS, reducing_gap=3.0)
