"""Images to PNG for the page, and an upload cut to CIFAR-10's size.

Uploads are decoded by `cae.core.photo.open_image` and `rgb_of`, as `cae colorize` decodes files:
the same modes, pixel limit and one-line messages, which name no server path.
"""

from __future__ import annotations

import base64

import torch
from PIL import Image, ImageOps

from cae.core.photo import png_bytes, rgb_of, to_pil, white_level

PNG_COMPRESS_LEVEL = 3  # zlib level: faster than Pillow's default 6 for slightly larger files


def cifar_sized(img: Image.Image, side: int = 32) -> torch.Tensor:
    """The centre square of a photo scaled to `side` x `side` (what a CIFAR-10 model was trained on)."""
    rgb = img.convert("RGB") if white_level(img) is None else to_pil(rgb_of(img))
    small = ImageOps.fit(rgb, (side, side), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return rgb_of(small)


def png_data_url(t: torch.Tensor) -> str:
    """A PNG `data:` URL, so one JSON answer carries every image of a result."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(t, PNG_COMPRESS_LEVEL)).decode("ascii")
