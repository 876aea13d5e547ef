"""The Guide mode of the Colorize tab: a photo kept on the server while a person places hints.

A photo is uploaded once (`upload_answer`); the server keeps its file's bytes (compressed, as
uploaded) and a display-sized decoded preview, named by an unguessable id. Each change of the
hints recolours the preview only (`preview_answer`: the network runs at its working scale, so
the cost is the preview's luma, merge and PNG); `suggest_answer` gives the likely colours at a
point; `render_answer` decodes the file again and colorizes it at full resolution into the
result store. Hints travel in the hints format v1 (`cae.core.hints`) in the ORIGINAL photo's
pixels as displayed; they are scaled to the preview here. The same hints give the same bytes.

Memory: at most MAX_PHOTOS photos and MAX_PHOTO_BYTES (their files plus previews) are kept,
the least recently used going first, each for at most PHOTO_SECONDS after its last use.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from cae.apps.serve.images import image_data_url, preview
from cae.apps.serve.jobs import CHROMA_BYTES_PER_PIXEL, ServeConfig, job_bytes, safe_stem
from cae.apps.serve.models import colorizer_of
from cae.apps.serve.store import ID_PATTERN
from cae.core.hints import Hint, check_inside, hints_document, parse_hints
from cae.core.photo import Colorizer, open_image
from cae.errors import CaeError

MAX_PHOTOS = 4  # photos kept for guiding; a fifth upload drops the least recently used
MAX_PHOTO_BYTES = 128 * 2**20  # their uploaded files and decoded previews together
PHOTO_SECONDS = 3600  # a photo not touched for an hour is dropped
PREVIEW_SIDE = 1024  # the guided preview's long side (the hints are placed on it)
MAX_HINTS = 1000  # hints in one request; the page's undo history is far below it
SUGGESTIONS = 5  # colours suggested at a point


class UnknownPhoto(CaeError):
    """A photo id the store does not hold (never given, or dropped by its bounds): the app answers 404."""


@dataclass
class GuidePhoto:
    data: bytes  # the uploaded file, decoded again for the full-resolution result
    preview: Image.Image  # display-sized, 8-bit (`images.preview`), the camera rotation applied
    width: int  # the photo as displayed
    height: int
    model_id: str
    filename: str
    used: float  # clock time of the last use

    @property
    def nbytes(self) -> int:
        return len(self.data) + self.preview.width * self.preview.height * 4


class PhotoStore:
    """Guided photos by id, least recently used first out (see the module's bounds)."""

    def __init__(self, max_count: int = MAX_PHOTOS, max_bytes: int = MAX_PHOTO_BYTES,
                 max_seconds: float = PHOTO_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_count, self.max_bytes, self.max_seconds, self.clock = max_count, max_bytes, max_seconds, clock
        self.items: OrderedDict[str, GuidePhoto] = OrderedDict()
        self.lock = threading.Lock()

    def put(self, photo: GuidePhoto) -> str:
        key = secrets.token_urlsafe(24)
        with self.lock:
            photo.used = self.clock()
            self.items[key] = photo
            self.evict()
        return key

    def get(self, key: str) -> GuidePhoto:
        """The photo `key`, marked as just used; else UnknownPhoto."""
        with self.lock:
            self.evict()
            photo = self.items.get(key) if ID_PATTERN.fullmatch(key) else None
            if photo is None:
                raise UnknownPhoto(f"no such photo (the server keeps the last {self.max_count} guided photos "
                                   "for an hour); choose the photo again")
            photo.used = self.clock()
            self.items.move_to_end(key)
            return photo

    def evict(self) -> None:
        """Drop idle photos, then the least recently used while over a bound (lock held); the most
        recently used stays unless idle (an upload over the byte bound alone is still guided)."""
        now = self.clock()
        total = sum(p.nbytes for p in self.items.values())
        while self.items:
            key, oldest = next(iter(self.items.items()))
            idle = now - oldest.used > self.max_seconds
            if not idle and (len(self.items) == 1 or (len(self.items) <= self.max_count and total <= self.max_bytes)):
                break
            del self.items[key]
            total -= oldest.nbytes


def guided_colorizer(cfg: ServeConfig, model_id: str) -> Colorizer:
    """The colorizer of a listed guided model (`RunsIndex.find` refuses any other id)."""
    entry = cfg.index.find(model_id, "guide")
    return colorizer_of(cfg.cache.get(entry))


def upload_answer(cfg: ServeConfig, photos: PhotoStore, model_id: str, data: bytes, filename: str) -> dict:
    """Keep an uploaded photo for guiding: its id, sizes, and the preview colorized without hints."""
    guided_colorizer(cfg, model_id)  # an unlisted model is refused (and a listed one loaded) before decoding
    with cfg.budget.reserve(job_bytes(cfg, data, CHROMA_BYTES_PER_PIXEL, f"the model {model_id}")):
        img = open_image(data, cfg.max_pixels)
        width, height = img.size
        small = preview(img, PREVIEW_SIDE)  # 8-bit, deeper gray read on its own scale
        del img
    photo = GuidePhoto(data, small, width, height, model_id, safe_stem(filename), 0.0)
    key = photos.put(photo)
    return {"id": key, "width": width, "height": height, "preview_width": small.width,
            "preview_height": small.height, "filename": photo.filename, **preview_answer(cfg, photos, key, None)}


def checked_hints(doc: Any, photo: GuidePhoto) -> list[Hint]:
    """The hints of a request's hints document, checked against the photo (one-line CaeErrors)."""
    hints = parse_hints({"version": 1, "hints": []} if doc is None else doc)
    if len(hints) > MAX_HINTS:
        raise CaeError(f"{len(hints)} hints: at most {MAX_HINTS} in one request")
    check_inside(hints, photo.width, photo.height)
    return hints


def to_preview(hints: list[Hint], photo: GuidePhoto) -> list[Hint]:
    """Hints in the original's pixels moved to the preview's: the same point of the continuous
    image (a pixel x spans [x, x + 1)), the radius scaled alike."""
    sx, sy = photo.preview.width / photo.width, photo.preview.height / photo.height
    pw, ph = photo.preview.width - 1, photo.preview.height - 1
    return [Hint(min(pw, max(0.0, (h.x + 0.5) * sx - 0.5)), min(ph, max(0.0, (h.y + 0.5) * sy - 0.5)), h.color,
                 None if h.radius is None else h.radius * sx) for h in hints]


def preview_answer(cfg: ServeConfig, photos: PhotoStore, key: str, doc: Any) -> dict:
    """The preview colorized with the hints of `doc`, and the hints as checked (a document)."""
    photo = photos.get(key)
    hints = checked_hints(doc, photo)
    colorizer = guided_colorizer(cfg, photo.model_id)
    t0 = time.perf_counter()
    with cfg.budget.reserve(photo.preview.width * photo.preview.height * CHROMA_BYTES_PER_PIXEL):
        result = colorizer.colorize_8bit(photo.preview, to_preview(hints, photo))
        url = image_data_url(result)
    return {"result": url, "hints": hints_document(hints), "seconds": round(time.perf_counter() - t0, 3)}


def suggest_answer(cfg: ServeConfig, photos: PhotoStore, key: str, body: Any) -> dict:
    """The likely colours at the point (x, y) of the original, given the hints of the body."""
    photo = photos.get(key)
    if not isinstance(body, dict):
        raise CaeError('a suggestion request is {"x": .., "y": .., "hints": [...]}')
    point = checked_hints({"version": 1, "hints": [{"x": body.get("x"), "y": body.get("y"), "color": "#000000"}]},
                          photo)
    hints = checked_hints({"version": 1, "hints": body.get("hints", [])}, photo)
    colorizer = guided_colorizer(cfg, photo.model_id)
    p = to_preview(point, photo)[0]
    return {"suggestions": colorizer.suggest(photo.preview, p.x, p.y, SUGGESTIONS, to_preview(hints, photo))}


def render_answer(cfg: ServeConfig, photos: PhotoStore, key: str, doc: Any) -> dict:
    """The photo colorized at full resolution with the hints of `doc`, put in the result store."""
    photo = photos.get(key)
    hints = checked_hints(doc, photo)
    colorizer = guided_colorizer(cfg, photo.model_id)
    with cfg.budget.reserve(job_bytes(cfg, photo.data, CHROMA_BYTES_PER_PIXEL, f"the model {photo.model_id}")):
        t0 = time.perf_counter()
        img = open_image(photo.data, cfg.max_pixels)
        result = colorizer.colorize_8bit(img, hints)
        del img
        name = f"{photo.filename}-guided.png"
        stored = cfg.store.put(result, name)
        del result
    return {"download": f"/api/result/{stored}", "filename": name, "seconds": round(time.perf_counter() - t0, 3)}


def hints_json(body: bytes) -> Any:
    """A request body as JSON; else a one-line CaeError."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CaeError(f"the request is not JSON ({type(e).__name__}); send a hints document "
                       '{"version": 1, "hints": [...]}') from None
