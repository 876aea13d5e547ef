"""A colorizer applied to one image of any size (the part of `cae colorize` that the study and
`cae serve` share): reading a photo, and predicting its chroma at a working scale.

Working scale: a colorizer trained on 32x32 images has learned what colour an object is when
the object fills a few dozen pixels; at a photo's native resolution it sees texture only. So
the chrominance is predicted on a copy downscaled (antialiased) to a short side of
`working_size` pixels (the run's `color.working_size`, 0 = native), upsampled (bilinear; the
eye tolerates blurred chroma) and merged with the photo's own full-resolution luma, which is
kept exactly. This is also what makes a 12-megapixel photo fast.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from cae.core.color import chroma, merge_chroma
from cae.core.data import luma
from cae.core.hints import Hint, check_inside, hex_color, hints_of
from cae.core.tasks import guide_of
from cae.core.text import first_line
from cae.errors import CaeError

TILE = 512  # tile side (output pixels) for large images; memory stays ~100 MB for unet16
OVERLAP = 32  # context margin around each tile, beyond the nets' receptive field radius
STRIP = 256  # rows merged at a time at full size
MAX_PIXELS = 64_000_000  # larger images are refused (decoding alone would take GBs)
# edge-aware upsampling (color.upsample = 'guided'): the guided filter runs on a copy of this short
# side, with box windows of this radius (its pixels: about one working pixel at a working size of 64)
# and this regularizer (a window whose luma varies less is smoothed, not sharpened)
EDGE_SIZE = 256
EDGE_RADIUS = 16
EDGE_EPS = 1e-3
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")  # a folder's photos


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


class ImageTooLarge(CaeError):
    """An image with more pixels than the limit (`cae serve` answers 413 to it, not 400)."""


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def open_image(source: Path | bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An image file (a path, or an upload's bytes) decoded, its camera rotation applied; else a
    one-line CaeError saying why, naming no path (`read_image` adds the file's name)."""
    img = None
    try:
        if (len(source) if isinstance(source, bytes) else source.stat().st_size) == 0:
            raise CaeError("the file is empty; choose a photo (PNG, JPEG, WebP, ...)")
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        w, h = img.size  # from the header, before any pixel is decoded
        if w * h > max_pixels:
            raise ImageTooLarge(f"the image is {w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,}; "
                                "downscale it first")
        oriented = ImageOps.exif_transpose(img)  # photos from cameras: apply the stored rotation
        oriented.load()  # decode now: a truncated file fails here, not later
        return oriented
    except CaeError:
        raise
    except FileNotFoundError:
        raise CaeError("no such file") from None
    except PermissionError:
        raise CaeError("not readable (permission denied)") from None
    except UnidentifiedImageError:
        raise CaeError("not an image Pillow can read (PNG, JPEG, WebP, BMP, TIFF, GIF, ...)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise CaeError(f"cannot decode the image ({first_line(e)}); the file may be truncated or corrupt") from None
    finally:
        if img is not None:
            img.close()  # the file (the oriented image is a copy, or fully loaded)


def photos_in(folder: Path) -> list[Path]:
    """The image files of a folder (by their suffix, `PHOTO_SUFFIXES`), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())


def photo_paths(folder: str | Path) -> list[Path]:
    """`photos_in` a folder that must exist and hold photos."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CaeError(f"photo folder {folder} does not exist")
    paths = photos_in(folder)
    if not paths:
        raise CaeError(f"photo folder {folder} holds no images ({', '.join(PHOTO_SUFFIXES)})")
    return paths


def white_level(img: Image.Image) -> float | None:
    """The value of white in a one-channel image of more than 8 bits, None for other modes.

    16-bit gray is white at 65535; convert('L') would clip everything above 255. 32-bit integers
    (mode I) and floats (mode F) carry no white level: tools write 8-bit values into them
    (Pillow's own convert('I') does), 16-bit ones, or floats in [0, 1]; the largest value tells
    which scale a photo's pixels use."""
    if img.mode in SIXTEEN_BIT_MODES:
        return 65535.0
    if img.mode not in ("I", "F"):
        return None
    top = img.getextrema()[1]
    if img.mode == "F" and top <= 1.0:
        return 1.0
    return 65535.0 if top > 255 else 255.0


def rgb_of(img: Image.Image, white: float | None | str = "auto") -> torch.Tensor:
    """RGB (3,H,W) float in [0, 1] of a decoded image of any mode (L, LA, RGBA, P, CMYK, ...);
    one-channel images deeper than 8 bits keep their precision (`white_level`). A strip of a
    larger image passes the whole image's `white`, since its own extremes may differ."""
    white = white_level(img) if white == "auto" else white
    if white is not None:
        a = np.clip(np.asarray(img, dtype=np.float32) / white, 0, 1)
        return torch.from_numpy(a).unsqueeze(0).expand(3, -1, -1).contiguous()
    a = np.array(img.convert("RGB"))  # uint8, a writable copy
    # uint8 to float in one pass by torch (threaded), not numpy's cast then divide then a copy
    return torch.from_numpy(a).permute(2, 0, 1).float().div_(255.0).contiguous()


def image_of_array(a: np.ndarray) -> Image.Image:
    """A Pillow image of a photo as array libraries hold one (imageio, OpenCV after its BGR to RGB,
    scikit-image, matplotlib): (H, W) gray or (H, W, 3 or 4) RGB(A), of uint8, uint16, or floats
    in [0, 1]; else a one-line CaeError."""
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or 0 in a.shape:
        raise CaeError(f"an image array is (H, W) gray or (H, W, 3 or 4) RGB(A), got shape {a.shape}")
    if a.dtype.kind == "f":  # floats in [0, 1], clipped: gray keeps its precision (mode F), colour is 8-bit
        a = np.clip(a, 0, 1).astype(np.float32) if a.ndim == 2 else (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    elif a.dtype == np.uint16:
        a = a if a.ndim == 2 else (a >> 8).astype(np.uint8)  # 16-bit gray is read as such (`white_level`)
    elif a.dtype != np.uint8:
        raise CaeError(f"an image array holds uint8, uint16 or floats in [0, 1], got {a.dtype}")
    return Image.fromarray(np.ascontiguousarray(a))


def open_file(path: Path) -> Image.Image:
    """`open_image` of a file; any failure is a one-line CaeError naming it."""
    try:
        if path.is_dir():
            raise CaeError(f"is a folder without photos ({', '.join(PHOTO_SUFFIXES)})")
        return open_image(path)
    except CaeError as e:
        raise type(e)(f"{path}: {e}") from None


def read_image(path: Path) -> torch.Tensor:
    """RGB (3,H,W) float in [0, 1] from an image file (`open_file`, `rgb_of`)."""
    return rgb_of(open_file(path))


def to_pil(t: torch.Tensor) -> Image.Image:
    """An 8-bit Pillow image (L, RGB or RGBA) of a (1, H, W), (3, H, W) or (4, H, W) tensor in [0, 1]."""
    a = t.detach().cpu().float().clamp(0, 1).mul_(255).round_().to(torch.uint8)
    arr = a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr))


def png_bytes(t: torch.Tensor, compress_level: int) -> bytes:
    """A (1, H, W), (3, H, W) or (4, H, W) tensor in [0, 1] as the bytes of an 8-bit PNG file
    (`to_pil`), at zlib level `compress_level` (0-9: faster, or smaller)."""
    buf = io.BytesIO()
    to_pil(t).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def alpha_of(img: Image.Image) -> torch.Tensor | None:
    """The opacity (1,H,W) in [0, 1] of a decoded image (`open_image`: already oriented) with
    transparency (RGBA, LA, PA, or a palette or gray image with a transparent colour); None for an
    opaque one."""
    if "A" not in img.getbands() and "transparency" not in img.info:
        return None
    a = np.array(img.convert("RGBA").getchannel("A"))
    return torch.from_numpy(a).unsqueeze(0).float().div_(255.0)


def _pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    # reflect needs the pad to be smaller than the side; tiny images fall back to edge replication
    mode = "reflect" if max(top, bottom) < x.shape[-2] and max(left, right) < x.shape[-1] else "replicate"
    return F.pad(x, (left, right, top, bottom), mode=mode)


def _padded_input(x: torch.Tensor, guide: torch.Tensor | None, margin: int, bottom: int,
                  right: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An image (1,C,h,w) and its guide padded by `margin` on every side plus `bottom` and `right`:
    the image mirrored, the guide with zeros (a mirrored hint would be a second one)."""
    xp = _pad(x, margin, bottom + margin, margin, right + margin)
    gp = None if guide is None else F.pad(guide.to(x.device), (margin, right + margin, margin, bottom + margin))
    return xp, gp


def decode_for_photos(model: torch.nn.Module, color, boost: float | None = None) -> None:  # noqa: ANN001
    """Set a classifier colorizer's decoding for photos: `boost` if given, else the run's
    `color.photo_boost` unless that is -1 (keep the calibrated boost), and no `color.spread`.
    Other colorizers: no-op."""
    if boost is not None and boost < 0:
        raise CaeError(f"the boost must be >= 0 (0 = the predicted mean colour), got {boost}")
    value = color.photo_boost if boost is None else boost
    if hasattr(model, "boost") and value >= 0:
        model.boost.fill_(value)
    if hasattr(model, "spread"):  # a whole-image statistic: a tiled photo's tiles would each have their own
        model.spread.fill_(1.0)


def load_for_photos(model_dir: str | Path, device: str = "auto", boost: float | None = None):  # noqa: ANN201
    """(model, config, task) of a colorize run folder, decoding set for photos (`decode_for_photos`)."""
    from cae.core.train import load_run

    model, cfg, task = load_run(model_dir, device)
    if task.kind != "colorize":
        raise CaeError(f"{model_dir} is a {task.kind} run, not a colorizer; pass a run trained with --task colorize")
    decode_for_photos(model, cfg.color, boost)
    return model, cfg, task


class PhotoColorizer:
    """What every colorizer of photos offers, the learned `Colorizer` and the hint baselines
    (`cae.experiments.guided`) alike: `colorizer(rgb, hints)` on a tensor, `colorize(image,
    hints)` on a file, a Pillow image or an array. Subclasses define `__call__`."""

    def __call__(self, image: torch.Tensor, hints=None) -> torch.Tensor:  # noqa: ANN001 - see hints_of
        raise NotImplementedError

    def check_hints(self, hints: Sequence[Hint]) -> None:
        """A one-line CaeError if this colorizer cannot follow `hints` (checked before any photo is read)."""

    def colorize(self, image: Image.Image | np.ndarray | str | Path, hints=None) -> Image.Image:  # noqa: ANN001
        """The colorized 8-bit image of a Pillow image, an image array (`image_of_array`) or an
        image file (its camera rotation applied), with the image's transparency if it has any.
        `hints` (`cae.core.hints.hints_of`: a list, a hints document or file) are in the pixels of
        the image as displayed: a file's after its camera rotation, a Pillow image's or array's as given."""
        return to_pil(self.colorize_image(_as_image(image), hints)[1])

    def colorize_image(self, img: Image.Image, hints=None) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        """(the RGB (3,H,W) of a decoded image, its colorization: (3,H,W), or (4,H,W) with the
        image's alpha when it has transparency)."""
        rgb, alpha = rgb_of(img), alpha_of(img)
        del img  # the decoded pixels are freed before the network runs (when the caller kept none)
        out = self(rgb, hints)
        return rgb, out if alpha is None else torch.cat([out, alpha])


def _as_image(image: Image.Image | np.ndarray | str | Path) -> Image.Image:
    """A decoded image of a Pillow image, an image array (`image_of_array`) or a file (`open_file`)."""
    if isinstance(image, np.ndarray):
        return image_of_array(image)
    return image if isinstance(image, Image.Image) else open_file(Path(image))


def rgb_input(image: torch.Tensor) -> torch.Tensor:
    """The RGB (3,H,W) of one image tensor given to a colorizer, (3,H,W) or gray (1,H,W) floats in
    [0, 1]; else a one-line CaeError."""
    if image.dim() != 3 or image.shape[0] not in (1, 3) or not image.is_floating_point():
        raise CaeError(f"a Colorizer takes one image as a float tensor (3, H, W) or (1, H, W) in [0, 1], got "
                       f"{image.dtype} {tuple(image.shape)}; colorize a batch one image at a time")
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


class Colorizer(PhotoColorizer):
    """A colorization run ready for photos of any size; the Python face of `cae colorize`.

        colorizer = cae.Colorizer.load()                 # the shipped colorizer, or a run folder
        colorizer.colorize("photo.jpg").save("photo.png")  # a file or a Pillow image in, Pillow out
        rgb = colorizer(gray_or_color)                   # a (3, H, W) tensor in [0, 1] in and out

    Only the image's luma is used, and it is kept exactly; the chroma is predicted at the run's
    working scale (`working_size`, 0 = native) as described above.
    """

    def __init__(self, model: torch.nn.Module, cfg, task, working_size: int | None = None) -> None:  # noqa: ANN001
        self.model, self.cfg, self.task = model, cfg, task
        self.working_size = cfg.color.working_size if working_size is None else working_size
        self.stride = total_stride(cfg.arch)
        self.upsample = cfg.color.upsample

    @classmethod
    def load(cls, model_dir: str | Path | None = None, device: str = "auto", boost: float | None = None,
             working_size: int | None = None, guided: bool = False) -> "Colorizer":
        """A colorize run folder (default: the weights shipped with cae, the guided colorizer's with
        `guided`), decoding set for photos (`load_for_photos`: `boost` overrides the run's
        `color.photo_boost`)."""
        from cae.core.runs import shipped_run

        model_dir = shipped_run("guided" if guided else "colorizer") if model_dir is None else Path(model_dir)
        return cls(*load_for_photos(model_dir, device, boost), working_size=working_size)

    def __call__(self, image: torch.Tensor, hints=None) -> torch.Tensor:  # noqa: ANN001 - see hints_of
        """The colorized RGB (3,H,W) in [0, 1], on the CPU, of an image (3,H,W) or a gray one
        (1,H,W) in [0, 1]. A guided colorizer follows `hints` (`hints_of`); one trained without
        hints refuses any (an empty list is none)."""
        rgb = rgb_input(image)
        given = hints_of(hints)
        check_inside(given, rgb.shape[2], rgb.shape[1])
        self.check_hints(given)
        return predict(self.model, self.task, rgb, self.stride, working_size=self.working_size, hints=given,
                       upsample=self.upsample)

    @property
    def guided(self) -> bool:
        """Whether this colorizer follows hints (a run trained with color.hints)."""
        return self.task.hints

    def check_hints(self, hints: Sequence[Hint]) -> None:
        """A one-line CaeError if there are hints and this colorizer was trained without them."""
        if hints and not self.guided:
            raise CaeError(f"this colorizer ({self.cfg.arch}, trained without hints) cannot follow hints; "
                           "use the guided colorizer (cae colorize --hints without --model), or a baseline "
                           "that spreads them: cae colorize --method levin (or idw), or "
                           "cae.GuidedBaseline('levin') in Python")

    def suggest(self, image: torch.Tensor | Image.Image | np.ndarray | str | Path, x: float, y: float, k: int = 5,
                hints=None) -> list[dict]:  # noqa: ANN001 - see hints_of
        """The k colours a guided classifier colorizer finds most likely at the point (x, y) of an
        image (pixels of the image as displayed), given `hints`: [{"color": "#rrggbb",
        "probability": p}, ...], most likely first; each is a chroma bin's centre at the point's
        own luma (so it is a colour the result can show there)."""
        if not self.guided or not self.task.bins:
            raise CaeError("suggested colours come from a guided classifier colorizer (color.hints with "
                           "color.decoder = 'classes'); load one, e.g. cae.Colorizer.load(guided=True)")
        rgb = image if isinstance(image, torch.Tensor) else rgb_of(_as_image(image))
        rgb = rgb_input(rgb)
        given = hints_of(hints)
        check_inside([*given, Hint(x, y, "#000000")], rgb.shape[2], rgb.shape[1])
        return suggest_colors(self.model, self.task, rgb, given, (x, y), k, self.working_size, self.stride)

    def colorize_8bit(self, img: Image.Image, hints: Sequence[Hint] = ()) -> Image.Image:
        """`colorize(img)` of a decoded image, bit for bit, holding far less memory: the luma is
        read and the result merged and quantized in strips of rows, so besides the caller's image
        only the float luma (4 bytes a pixel) and the 8-bit result are full-size. A network that
        predicts RGB (not chroma) sees the whole RGB image: that case takes the plain path."""
        chroma_net = self.task.target != "rgb"
        if not chroma_net:
            return to_pil(self.colorize_image(img, hints)[1])
        check_inside(hints, *img.size)
        self.check_hints(hints)
        device = next(self.model.parameters()).device
        y = luma_of(img).to(device)
        small = downscale(y, self.working_size).expand(-1, 3, -1, -1)
        guide = photo_guide(self.task, hints, tuple(y.shape[-2:]), tuple(small.shape[-2:]))
        out = _network_output(self.model, self.task, small, self.stride, TILE, OVERLAP, guide)
        out = edge_aware_chroma(y, out) if self.upsample == "guided" else out
        del small
        result = Image.new("RGB", img.size)
        for i, rgb in _merged_strips(y, out, self.task.target):
            result.paste(to_pil(rgb[0]), (0, i))  # to_pil quantizes a strip as it would the whole
        if "A" in img.getbands() or "transparency" in img.info:  # as `alpha_of`, kept exactly in 8 bits
            result.putalpha(img.convert("RGBA").getchannel("A"))
        return result


def predict(model: torch.nn.Module, task, rgb: torch.Tensor, stride: int, tile: int = TILE,  # noqa: ANN001
            overlap: int = OVERLAP, working_size: int = 0, hints: Sequence[Hint] = (),
            upsample: str = "bilinear") -> torch.Tensor:
    """The colorized RGB (3,H,W) in [0, 1] of one image (3,H,W), the luma of `rgb` kept.

    `working_size` > 0: the network runs on a copy whose short side is that many pixels (only
    when the image is larger) and its chrominance is upsampled to the full size. A guided
    colorizer (`task.hints`) sees `hints` drawn at that scale (`hint_maps`). `upsample` 'guided'
    brings the chroma up edge-aware (`edge_aware_chroma`) before the bilinear rest of the way."""
    device = next(model.parameters()).device
    _, h, w = rgb.shape
    x = rgb.unsqueeze(0).to(device)
    y = luma(x)
    # a chroma net sees only the luma: shrink that one channel (as gray RGB, whose luma it is)
    small = downscale(x, working_size) if task.target == "rgb" else \
        downscale(y, working_size).expand(-1, 3, -1, -1)
    guide = photo_guide(task, hints, (h, w), tuple(small.shape[-2:]))
    out = _network_output(model, task, small, stride, tile, overlap, guide)
    if task.target == "rgb" and small.shape[-2:] == x.shape[-2:]:
        return out[0].clamp(0, 1).cpu()
    space = "ycbcr" if task.target == "rgb" else task.target
    c = chroma(out, space) if task.target == "rgb" else out
    return _merge_upsampled(y, edge_aware_chroma(y, c) if upsample == "guided" else c, space)[0].cpu()


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """The mean of every (2r+1)^2 window of x (N,C,H,W), edges replicated: two running sums,
    so the cost does not grow with r."""
    k = 2 * r + 1
    x = F.pad(x, (r + 1, r, r + 1, r), mode="replicate").cumsum(-1)
    x = (x[..., k:] - x[..., :-k]).cumsum(-2)
    return (x[..., k:, :] - x[..., :-k, :]) / (k * k)


def edge_aware_chroma(y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Chroma (1,2,h,w) of a working scale brought to a copy of the luma y (1,1,H,W) with short
    side EDGE_SIZE by the guided filter (He, Sun & Tang 2010): in each window the chroma is fitted
    as a linear function of the luma, so it changes where the luma changes (a colour's edge smeared
    by bilinear upsampling gathers at the luma's edge) and is smoothed where the luma is flat (the
    working pixels' blocks fade). Unchanged when that copy is not larger than `c`."""
    guide = downscale(y, EDGE_SIZE)
    if guide.shape[-2] <= c.shape[-2] or guide.shape[-1] <= c.shape[-1]:
        return c
    p = F.interpolate(c, size=guide.shape[-2:], mode="bilinear", align_corners=False)
    mean_y, mean_p = box_mean(guide, EDGE_RADIUS), box_mean(p, EDGE_RADIUS)
    a = (box_mean(guide * p, EDGE_RADIUS) - mean_y * mean_p) / (box_mean(guide * guide, EDGE_RADIUS) - mean_y ** 2
                                                                + EDGE_EPS)
    b = mean_p - a * mean_y
    return box_mean(a, EDGE_RADIUS) * guide + box_mean(b, EDGE_RADIUS)


def _merge_upsampled(y: torch.Tensor, c: torch.Tensor, space: str, rows: int | None = None) -> torch.Tensor:
    """RGB (1,3,H,W) in [0, 1] from full-size luma (1,1,H,W) and chroma (1,2,h,w) upsampled
    bilinearly (as F.interpolate, align_corners=False), in strips of `rows` rows: a 12-megapixel
    photo never holds its full-size chroma and merge temporaries at once."""
    out = torch.empty(1, 3, *y.shape[-2:], device=y.device)
    for i, rgb in _merged_strips(y, c, space, rows):
        out[:, :, i:i + rgb.shape[-2]] = rgb
    return out


def _merged_strips(y: torch.Tensor, c: torch.Tensor, space: str,
                   rows: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, RGB (1,3,rows,W) in [0, 1]) of `_merge_upsampled`, strip by strip."""
    h, w = y.shape[-2:]
    rows = rows or STRIP
    c = F.interpolate(c, size=(c.shape[-2], w), mode="bilinear", align_corners=False)  # widths first: cheap
    src = ((torch.arange(h, dtype=torch.float64, device=c.device) + 0.5) * (c.shape[-2] / h) - 0.5).clamp(min=0)
    lo = src.floor().long().clamp(max=c.shape[-2] - 1)
    hi, frac = (lo + 1).clamp(max=c.shape[-2] - 1), (src - lo).float().view(1, 1, -1, 1)
    for i in range(0, h, rows):
        j = slice(i, i + rows)
        cs = torch.lerp(c[:, :, lo[j]], c[:, :, hi[j]], frac[:, :, j])
        yield i, merge_chroma(y[:, :, j], cs, space).clamp_(0, 1)


def luma_of(img: Image.Image, rows: int | None = None) -> torch.Tensor:
    """The BT.601 luma (1,1,H,W) of a decoded image, equal to `luma(rgb_of(img))` but read in
    strips of rows, so the full-size float RGB (12 bytes a pixel) never exists."""
    white, rows = white_level(img), rows or STRIP
    w, h = img.size
    y = torch.empty(1, 1, h, w)
    for i in range(0, h, rows):
        strip = img.crop((0, i, w, min(h, i + rows)))
        y[:, :, i:i + strip.height] = luma(rgb_of(strip, white).unsqueeze(0))
    return y


def downscale(x: torch.Tensor, short_side: int) -> torch.Tensor:
    """`x` (N,C,H,W) resized (antialiased) so its short side is `short_side`; unchanged when it
    is already that small or `short_side` is 0."""
    size = working_shape(*x.shape[-2:], short_side)
    if size == tuple(x.shape[-2:]):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def working_shape(h: int, w: int, short_side: int) -> tuple[int, int]:
    """(rows, columns) of an h x w image at the working scale (`downscale`): its short side
    `short_side` pixels, or its own size when already that small or `short_side` is 0."""
    if short_side <= 0 or min(h, w) <= short_side:
        return h, w
    f = short_side / min(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


def suggest_colors(model: torch.nn.Module, task, rgb: torch.Tensor, hints: Sequence[Hint],  # noqa: ANN001
                   point: tuple[float, float], k: int, working_size: int, stride: int) -> list[dict]:
    """`Colorizer.suggest`: the k most likely chroma bins at `point` (x, y) of an image (3,H,W),
    from a guided classifier's softmax at the working scale, as colours at the point's luma."""
    from cae.core.unet import CLASS_POOL

    _, h, w = rgb.shape
    device = next(model.parameters()).device
    y = luma(rgb.unsqueeze(0).cpu())
    small = downscale(y, working_size)
    sh, sw = small.shape[-2:]
    guide = photo_guide(task, hints, (h, w), (sh, sw))
    x_in, g_in = _padded_input(small.expand(-1, 3, -1, -1).to(device), guide, 0, -sh % stride, -sw % stride)
    with torch.inference_mode():
        logits = model.raw(task.network_input(x_in, g_in)).float()
    cx, cy = working_pixel(point[0], sw / w, sw), working_pixel(point[1], sh / h, sh)
    probs = torch.softmax(logits[0, :, cy // CLASS_POOL, cx // CLASS_POOL], dim=0).cpu()
    top = probs.topk(min(k, len(probs)))
    lum = y[0, 0, min(h - 1, int(point[1])), min(w - 1, int(point[0]))].expand(len(top.indices)).reshape(-1, 1, 1, 1)
    colours = merge_chroma(lum, model.centres.cpu()[top.indices].view(-1, 2, 1, 1), "ycbcr").clamp(0, 1)
    return [{"color": hex_color(c.flatten().tolist()), "probability": float(p)} for c, p in zip(colours, top.values)]


def photo_guide(task, hints: Sequence[Hint], size: tuple[int, int], work: tuple[int, int]):  # noqa: ANN001, ANN201
    """A guided colorizer's guide (1,3,h,w) for `hints` on a photo of `size` (H, W) seen at the
    working scale `work` (h, w) (`hint_maps`, `guide_of`); None for a colorizer without hints."""
    if not task.hints:
        return None
    return guide_of(*hint_maps(hints, size, work))


def _network_output(model: torch.nn.Module, task, x: torch.Tensor, stride: int, tile: int,  # noqa: ANN001
                    overlap: int, guide: torch.Tensor | None = None) -> torch.Tensor:
    """The network's output (1,C,h,w) (RGB or chroma) for an image (1,3,h,w) and a guided
    colorizer's `guide` (1,3,h,w): padded to the stride (`_padded_input`), in overlapping tiles
    when larger than `tile`, cropped back."""
    _, _, h, w = x.shape
    device = x.device
    tile = max(stride, tile // stride * stride)
    m = -(-overlap // stride) * stride  # margin, a multiple of the stride so tiles stay aligned
    # pad to a multiple of the tile grid (or of the stride for a single tile), plus the margins
    th, tw = (-(-h // tile) * tile, -(-w // tile) * tile) if max(h, w) > tile else \
        (-(-h // stride) * stride, -(-w // stride) * stride)
    single = max(h, w) <= tile
    mm = 0 if single else m
    xp, gp = _padded_input(x, guide, mm, th - h, tw - w)
    outs = torch.zeros(1, task.pred_channels, th, tw, device=device)
    with torch.inference_mode():
        step_h, step_w = (th, tw) if single else (tile, tile)
        for i in range(0, th, step_h):
            for j in range(0, tw, step_w):
                window = (slice(None), slice(None), slice(i, i + step_h + 2 * mm), slice(j, j + step_w + 2 * mm))
                y = model(task.network_input(xp[window], None if gp is None else gp[window])).float()
                outs[:, :, i:i + step_h, j:j + step_w] = y[:, :, mm:mm + step_h, mm:mm + step_w]
    return outs[:, :, :h, :w]


def hint_maps(hints: Sequence[Hint], size: tuple[int, int], work: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Hints on a photo of `size` (H, W) pixels as displayed, drawn at a working scale of `work`
    (h, w): a chroma map (1,2,h,w), BT.601 (Cb, Cr) as `cae.core.color.chroma` gives them (0.5,
    neutral, where no hint falls), and a mask (1,1,h,w), 1 where a hint falls.

    The photo's pixel x spans [x, x + 1) of the continuous axis, which the working scale shrinks
    by w / W as the photo's own resampling does (`downscale`, align_corners=False): a point lands
    on the working pixel floor((x + 0.5) w / W), the one that shows it, at any size. A hint covers
    that pixel and, with a radius, every working pixel whose centre lies within the radius (in the
    photo's pixels) of the point. A later hint is drawn over an earlier one."""
    (big_h, big_w), (h, w) = size, work
    check_inside(hints, big_w, big_h)
    cmap, mask = torch.full((1, 2, h, w), 0.5), torch.zeros(1, 1, h, w)
    if not hints:
        return cmap, mask
    colors = chroma(torch.tensor([hint.rgb for hint in hints]).view(-1, 3, 1, 1))[:, :, 0, 0]
    sx, sy = w / big_w, h / big_h
    for hint, c in zip(hints, colors):
        cx, cy = working_pixel(hint.x, sx, w), working_pixel(hint.y, sy, h)
        cmap[0, :, cy, cx], mask[0, 0, cy, cx] = c, 1.0
        if hint.radius:
            cols, dx = _span(hint.x, hint.radius, sx, w)
            rows, dy = _span(hint.y, hint.radius, sy, h)
            inside = dy[:, None] ** 2 + dx[None, :] ** 2 <= hint.radius ** 2
            cmap[0, :, rows, cols] = torch.where(inside, c.view(2, 1, 1), cmap[0, :, rows, cols])
            mask[0, 0, rows, cols] = torch.where(inside, 1.0, mask[0, 0, rows, cols])
    return cmap, mask


def working_pixel(v: float, scale: float, n: int) -> int:
    """The working pixel (of n along an axis shrunk by `scale`) that shows the photo's coordinate v
    (its pixel v spans [v, v + 1)), as the photo's own resampling maps it (`hint_maps`)."""
    return min(n - 1, math.floor((v + 0.5) * scale))


def _span(v: float, r: float, scale: float, n: int) -> tuple[slice, torch.Tensor]:
    """The working pixels along one axis whose centres may lie within r of the photo's coordinate
    v, and their centres' distances to v in the photo's pixels."""
    lo, hi = max(0, math.floor((v - r + 0.5) * scale)), min(n - 1, math.floor((v + r + 0.5) * scale))
    centres = (torch.arange(lo, hi + 1, dtype=torch.float64) + 0.5) / scale - 0.5
    return slice(lo, hi + 1), (centres - v).float()


Propagate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def predict_guided(rgb: torch.Tensor, hints: Sequence[Hint], propagate: Propagate, working_size: int) -> torch.Tensor:
    """The RGB (3,H,W) in [0, 1] of an image (3,H,W) colorized from hints, its luma kept: the hints
    are drawn at the working scale (`hint_maps`), `propagate(luma, chroma map, mask)` (all at that
    scale: (1,1,h,w), (1,2,h,w), (1,1,h,w)) gives the chroma (1,2,h,w), which is upsampled and
    merged with the full-size luma as the automatic colorizer's is (`predict`)."""
    _, h, w = rgb.shape
    y = luma(rgb.unsqueeze(0).cpu())
    small = downscale(y, working_size)
    cmap, mask = hint_maps(hints, (h, w), tuple(small.shape[-2:]))
    return _merge_upsampled(y, propagate(small, cmap, mask).float(), "ycbcr")[0]
