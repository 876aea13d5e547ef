"""Full-resolution results kept for their download route, and the memory budget of the jobs.

A colorized photo is answered with display-sized previews; its full-resolution PNG is written
to a private temporary folder and named by an unguessable id (`secrets`), so the server's
memory does not grow with the results it keeps. The store is bounded in count, bytes on disk
and age; the oldest result goes first. A request names a result only by its id, which is
looked up in the store, never joined to a path.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

MAX_RESULTS = 32  # results kept for download
MAX_RESULT_BYTES = 2 * 2**30  # their PNG files together, on disk
RESULT_SECONDS = 3600  # a result can be downloaded for an hour after it was made
PNG_COMPRESS_LEVEL = 3  # zlib level: faster than Pillow's default 6 for slightly larger files
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")  # secrets.token_urlsafe(24)


@dataclass
class StoredResult:
    path: Path
    filename: str  # the download name
    size: int  # bytes on disk
    made: float  # clock time


class ResultStore:
    """PNG results by id, in a temporary folder removed by `close` (the server's shutdown)."""

    def __init__(self, max_count: int = MAX_RESULTS, max_bytes: int = MAX_RESULT_BYTES,
                 max_seconds: float = RESULT_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="cae-serve-"))
        self._max_count, self._max_bytes, self._max_seconds, self._clock = max_count, max_bytes, max_seconds, clock
        self._items: OrderedDict[str, StoredResult] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, image: Image.Image, filename: str) -> str:
        """Write `image` as a PNG (straight to its file: no copy of the encoded bytes in memory);
        return its id."""
        key = secrets.token_urlsafe(24)
        path = self.folder / f"{key}.png"
        image.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        with self._lock:
            self._items[key] = StoredResult(path, filename, path.stat().st_size, self._clock())
            self._evict()
        return key

    def get(self, key: str) -> StoredResult | None:
        """The result `key`, or None when unknown, malformed or expired."""
        if not ID_PATTERN.fullmatch(key):
            return None
        with self._lock:
            self._evict()
            return self._items.get(key)

    def _evict(self) -> None:
        """Drop expired results, then the oldest while over the count or byte bound (lock held)."""
        now = self._clock()
        total = sum(r.size for r in self._items.values())
        while self._items:
            key, oldest = next(iter(self._items.items()))
            if now - oldest.made <= self._max_seconds and len(self._items) <= self._max_count \
                    and total <= self._max_bytes:
                break
            del self._items[key]
            total -= oldest.size
            oldest.path.unlink(missing_ok=True)  # a download under way keeps its open file (POSIX)

    def close(self) -> None:
        with self._lock:
            self._items.clear()
            shutil.rmtree(self.folder, ignore_errors=True)


class MemoryBudget:
    """Bytes the jobs in flight may hold for pixels: a job reserves its estimate before it decodes
    and waits until that much is free, so big photos run one after another while small ones share
    the job slots."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._used = 0
        self._free = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold `nbytes` (at most `total`: the caller refuses larger jobs first) while the block runs."""
        nbytes = min(nbytes, self.total)
        with self._free:
            self._free.wait_for(lambda: self._used + nbytes <= self.total)
            self._used += nbytes
        try:
            yield
        finally:
            with self._free:
                self._used -= nbytes
                self._free.notify_all()
