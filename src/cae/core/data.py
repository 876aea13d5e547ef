"""CIFAR-10: finding the files, reading the official binary layout, the seeded split.

The binary layout (`cifar-10-batches-bin/`) is parsed with numpy; nothing is unpickled.
Where the data comes from, in order: an explicit folder (`--data`), `$CAE_DATA_DIR`, the user
cache (`~/.cache/cae`, or `$XDG_CACHE_HOME/cae`), else the official archive is downloaded
into the cache, its MD5 verified before extraction."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cae.core.text import first_line
from cae.errors import CaeError

try:
    import fcntl
except ImportError:  # Windows: the cache is filled without a lock (see `_cache_lock`)
    fcntl = None

RECORD_BYTES = 3073  # 1 label byte + 3 x 32 x 32 pixel bytes
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CACHE_LOCK = ".download.lock"
EXTRACTING = ".extracting-"  # prefix of the temporary folder an archive is extracted into
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
DEFAULT_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class Cifar10:
    """All 60,000 images pooled (training batches first, then the test batch)."""

    images: torch.Tensor  # uint8 (N, 3, 32, 32)
    labels: torch.Tensor  # int64 (N,)
    classes: tuple[str, ...]
    source: Path


def cache_dir() -> Path:
    """The user cache folder for downloaded data."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cae"


def _as_batches_folder(d: Path) -> Path | None:
    """Accept the folder holding `cifar-10-batches-bin/` or that folder itself."""
    if (d / FOLDER).is_dir():
        return d / FOLDER
    if d.is_dir():
        return d
    return None


def resolve_data_dir(explicit: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Find the CIFAR-10 binary folder: explicit dir, $CAE_DATA_DIR, user cache, else download."""
    for origin, value in (("--data", explicit), ("CAE_DATA_DIR", os.environ.get("CAE_DATA_DIR"))):
        if value:
            found = _as_batches_folder(Path(value).expanduser())
            if found is None:
                raise CaeError(f"data folder {value} (from {origin}) does not exist; "
                               f"point {origin} at the folder holding {FOLDER}/ or at that folder itself")
            return found
    cached = cache_dir() / FOLDER
    if cached.is_dir():
        return cached
    if not download:
        raise CaeError(f"no CIFAR-10 data found; pass --data DIR or set CAE_DATA_DIR (looked in {cached})")
    return download_cifar10(cache_dir())


def download_cifar10(dest: Path) -> Path:
    """Download the official binary archive into `dest`, verify its MD5, extract it safely.

    Processes that fill an empty cache at once (torchrun's ranks, two commands) take turns under
    a lock on the cache: the first downloads and extracts, the others find the finished copy."""
    import pooch  # imported here: no network code runs at import time

    dest.mkdir(parents=True, exist_ok=True)
    with _cache_lock(dest):
        if (dest / FOLDER).is_dir():  # made by another process while this one waited
            return dest / FOLDER
        for left in dest.glob(f"{EXTRACTING}*"):  # by a process killed mid-extraction; we hold the lock
            shutil.rmtree(left, ignore_errors=True)
        try:
            archive = pooch.retrieve(ARCHIVE_URL, known_hash=f"md5:{ARCHIVE_MD5}", path=dest,
                                     fname="cifar-10-binary.tar.gz", progressbar=True)
        except Exception as e:  # network errors, checksum mismatch
            reason = f"{type(e).__name__}: {first_line(e, 100)}"  # cut: requests' own run to 400 characters
            raise CaeError(f"could not download CIFAR-10 from {ARCHIVE_URL} ({reason}); download "
                           "cifar-10-binary.tar.gz by hand, extract it and pass its folder with --data or "
                           "CAE_DATA_DIR") from None
        extract_archive(Path(archive), dest)
    return dest / FOLDER


@contextlib.contextmanager
def _cache_lock(dest: Path) -> Iterator[None]:
    """An exclusive lock on the cache folder `dest`, waited for (an `flock`, dropped by the kernel
    if its holder dies). Without fcntl (Windows) there is none; the extraction's rename still
    keeps every copy whole, and a second process only repeats the work."""
    if fcntl is None:
        yield
        return
    with open(dest / CACHE_LOCK, "a") as f:  # never unlinked: a process waiting on it must lock the same file
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a tar.gz into `dest`, refusing members that would land outside it (path traversal).

    The members are extracted into a temporary folder beside, then each top-level entry is renamed
    into `dest` (atomic on one file system): a reader finds a complete `cifar-10-batches-bin/` or
    none, never one being written. If another process renamed its copy first, that one stays."""
    root = dest.resolve()
    with tarfile.open(archive, "r:gz") as tar:
        for m in tar.getmembers():
            target = (root / m.name).resolve()
            if not target.is_relative_to(root) or m.issym() or m.islnk() or m.isdev():
                raise CaeError(f"archive {archive} holds an unsafe member {m.name!r}; "
                               "delete it and download the official archive again")
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=EXTRACTING))
        try:
            tar.extractall(tmp, filter="data")
            for entry in tmp.iterdir():
                try:
                    os.rename(entry, root / entry.name)
                except OSError as e:
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):  # not "another copy is in place"
                        raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def read_batch_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one binary batch file into (uint8 images (n,3,32,32), int64 labels (n,))."""
    if not path.is_file():
        raise CaeError(f"CIFAR-10 file {path} is missing; re-extract cifar-10-binary.tar.gz "
                       "or point --data / CAE_DATA_DIR at a complete cifar-10-batches-bin folder")
    size = path.stat().st_size
    if size == 0 or size % RECORD_BYTES:
        raise CaeError(f"CIFAR-10 file {path} is truncated or corrupt ({size} bytes is not a positive "
                       f"multiple of {RECORD_BYTES}); download the archive again")
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = raw[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise CaeError(f"CIFAR-10 file {path} is corrupt: record {bad[0]} has label {labels[bad[0]]} "
                       "outside 0-9; download the archive again")
    return raw[:, 1:].reshape(-1, 3, 32, 32), labels


def read_classes(folder: Path) -> tuple[str, ...]:
    meta = folder / META_FILE
    if not meta.is_file():
        return DEFAULT_CLASSES
    names = tuple(line.strip() for line in meta.read_text().splitlines() if line.strip())
    return names if len(names) == 10 else DEFAULT_CLASSES


def load_cifar10(folder: str | os.PathLike | None = None) -> Cifar10:
    """Load all 60,000 CIFAR-10 images (50,000 training then 10,000 test) as one uint8 tensor."""
    path = resolve_data_dir(folder)
    files = [path / f for f in (*TRAIN_FILES, TEST_FILE)]
    if not any(f.exists() for f in files):
        raise CaeError(f"data folder {path} holds no CIFAR-10 batch files; point --data / CAE_DATA_DIR "
                       f"at the folder holding {FOLDER}/ (data_batch_1.bin ... test_batch.bin)")
    parts = [read_batch_file(f) for f in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return Cifar10(images=images, labels=labels, classes=read_classes(path), source=path)


def split_indices(labels: torch.Tensor | np.ndarray, seed: int = 0, limit: int = 0,
                  fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> dict[str, np.ndarray]:
    """A stratified, seeded train/val/test split of the pooled images (80/10/10 by default).

    Each class is permuted with the seed and cut by the fractions, so every split holds each
    class in proportion. `limit` > 0 takes a stratified subset of that many images first (the
    subset's test images are a subset of the full test split for the same seed).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    n = len(labels)
    classes = np.unique(labels)
    keep = limit / n if 0 < limit < n else 1.0
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        m = len(idx)
        n_train, n_val = round(m * fractions[0]), round(m * fractions[1])
        cuts = {"train": idx[:n_train], "val": idx[n_train:n_train + n_val], "test": idx[n_train + n_val:]}
        for name, part in cuts.items():
            parts[name].append(part[: max(1, round(len(part) * keep))])
    # one more seeded shuffle so the classes are interleaved (a batch is never one class)
    return {name: rng.permutation(np.concatenate(p)) for name, p in parts.items()}


def class_balance(labels: torch.Tensor | np.ndarray, split: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """The fraction of each class in each split (0.1 each for a balanced split)."""
    labels = np.asarray(labels)
    k = int(labels.max()) + 1
    return {name: (np.bincount(labels[idx], minlength=k) / max(1, len(idx))).tolist() for name, idx in split.items()}


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std of uint8 images (N,C,H,W), in [0, 1] units (for
    standardization). Computed from each channel's histogram of its 256 levels in float64: exact,
    and without a float copy of the images (590 MB for CIFAR-10's training split)."""
    levels = torch.arange(256, dtype=torch.float64) / 255
    mean, std = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        m = (counts * levels).sum() / counts.sum()
        mean.append(m.item())
        std.append(((counts * (levels - m) ** 2).sum() / (counts.sum() - 1)).sqrt().item())
    return mean, std


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B of (..., 3, H, W) -> (..., 1, H, W)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype, device=rgb.device)
    # one pass per channel plane, not products broadcast along the channels and then summed:
    # a channels_last batch keeps each pixel's 3 values together, where that ran 2-3x slower
    # (in float32 and float64 the same sum in the same order, bit for bit)
    return rgb[..., 0:1, :, :] * w[0] + rgb[..., 1:2, :, :] * w[1] + rgb[..., 2:3, :, :] * w[2]
