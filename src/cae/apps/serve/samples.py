"""The CIFAR-10 test images the Reconstruct tab offers: the first of the seeded test split.

The split is `cae.core.data.split_indices(labels, seed=0)["test"]`, the one the shipped reference
was trained with, so the images are ones it never saw. Data is looked up as the CLI does
(CAE_DATA_DIR, the user cache) but never downloaded: without it the grid says so.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import torch

from cae.errors import CaeError

GRID_SIZE = 48
SPLIT_SEED = 0


@dataclass
class Samples:
    """The grid's images (uint8 (N,3,32,32)) and class names, or why there are none."""

    images: torch.Tensor | None = None
    labels: list[str] = field(default_factory=list)
    message: str = ""

    def image(self, position: int) -> torch.Tensor:
        """Grid image `position` as (3,32,32) float in [0, 1]; a `CaeError` if there is none."""
        if self.images is None:
            raise CaeError(self.message)
        if not 0 <= position < len(self.images):
            raise CaeError(f"no CIFAR-10 image #{position}; the grid holds 0 to {len(self.images) - 1}")
        return self.images[position].float().div(255)


class SampleGrid:
    """Loads the grid once, on first use (reading CIFAR-10 takes a second and ~180 MB briefly)."""

    def __init__(self, data_dir: str | os.PathLike | None = None, size: int = GRID_SIZE) -> None:
        self._data_dir = data_dir
        self._size = size
        self._lock = threading.Lock()
        self._samples: Samples | None = None

    def get(self) -> Samples:
        with self._lock:
            if self._samples is None:
                self._samples = load_samples(self._data_dir, self._size)
            return self._samples


def load_samples(data_dir: str | os.PathLike | None, size: int) -> Samples:
    """The first `size` test-split images, keeping only them (not the 60,000)."""
    from cae.core.data import load_cifar10, resolve_data_dir, split_indices

    try:
        data = load_cifar10(resolve_data_dir(data_dir, download=False))
    except CaeError as e:
        return Samples(message=f"No CIFAR-10 data ({e}). Uploading a photo still works.")
    picks = split_indices(data.labels, seed=SPLIT_SEED)["test"][:size]
    idx = torch.as_tensor(picks)
    labels = [data.classes[int(c)] for c in data.labels[idx]]
    return Samples(images=data.images[idx].clone(), labels=labels)
