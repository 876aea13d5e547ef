"""Uploaded bytes to images and images to PNG: the page's only contact with image files.

`cae.apps.colorize.read_image` reads from a path; an upload is bytes in memory, so it is decoded
here with the same Pillow calls, modes and pixel limit, and refused with a message that names
no server path.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cae.errors import CaeError

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
PNG_COMPRESS_LEVEL = 3  # zlib level: faster than Pillow's default 6 for slightly larger files


class ImageTooLarge(CaeError):
    """An upload with more pixels than the limit (the page answers 413, not 400)."""


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """The decoded image of an uploaded file (camera rotation applied); a `CaeError` saying why not."""
    if not data:
        raise CaeError("the file is empty; choose a photo (PNG, JPEG, WebP, ...)")
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size  # known from the header, before any pixel is decoded
        if w * h > max_pixels:
            raise ImageTooLarge(f"the image is {w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,}; "
                           "downscale it first")
        img = ImageOps.exif_transpose(img)
        img.load()  # decode now: a truncated file fails here, not later
    except CaeError:
        raise
    except UnidentifiedImageError:
        raise CaeError("the file is not an image Pillow can read (PNG, JPEG, WebP, BMP, TIFF, GIF, ...)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CaeError(f"cannot decode the image ({first}); the file may be truncated or corrupt") from None
    return img


def to_rgb_tensor(img: Image.Image) -> torch.Tensor:
    """RGB (3,H,W) float in [0, 1]; 16-bit gray keeps its precision (convert('L') would clip it)."""
    if img.mode in SIXTEEN_BIT_MODES:
        a = np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0, 1)
        return torch.from_numpy(a).unsqueeze(0).expand(3, -1, -1).contiguous()
    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0  # L, LA, RGBA, P, CMYK, ...
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def cifar_sized(img: Image.Image, side: int = 32) -> torch.Tensor:
    """The centre square of a photo scaled to `side` x `side` (what a CIFAR-10 model was trained on)."""
    rgb = img.convert("RGB") if img.mode not in SIXTEEN_BIT_MODES else to_pil(to_rgb_tensor(img))
    small = ImageOps.fit(rgb, (side, side), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return to_rgb_tensor(small)


def to_pil(t: torch.Tensor) -> Image.Image:
    """An 8-bit Pillow image of a (4,H,W) RGBA, (3,H,W) or (1,H,W) tensor in [0, 1]."""
    a = t.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    arr = a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr))


def png_bytes(t: torch.Tensor) -> bytes:
    """A (4,H,W), (3,H,W) or (1,H,W) tensor in [0, 1] as PNG file bytes."""
    buf = io.BytesIO()
    to_pil(t).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def png_data_url(t: torch.Tensor) -> str:
    """A PNG `data:` URL, so one JSON answer carries every image of a result."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(t)).decode("ascii")
