"""Test helpers shared by several test files (imported as `helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cae.core.data import TEST_FILE, TRAIN_FILES


def write_smooth_cifar(folder: Path, per_file: int = 400, seed: int = 0) -> Path:
    """Synthetic batch files of blocky images plus noise (learnable, unlike pure noise)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*TRAIN_FILES, TEST_FILE):
        labels = rng.permutation(np.arange(per_file) % 10).astype(np.uint8)
        coarse = rng.integers(0, 256, (per_file, 3, 4, 4)).astype(np.float32)
        img = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3) + rng.normal(0, 8, (per_file, 3, 32, 32))
        pixels = img.clip(0, 255).astype(np.uint8).reshape(per_file, -1)
        np.concatenate([labels[:, None], pixels], axis=1).tofile(folder / name)
    return folder


def loaded_image(path: Path | str) -> Image.Image:
    """An image file decoded and its file closed at once (a bare `Image.open` leaves the open
    file to the garbage collector)."""
    with Image.open(path) as img:
        img.load()
    return img
