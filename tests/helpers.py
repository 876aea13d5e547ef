"""Test helpers shared by several test files (imported as `helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import importlib.util
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


def hint_summary(gains: dict[str, dict[int, float]], cifar: bool = False) -> list[dict]:
    """hint_study.json's summary rows of one set with the chosen gains per method and count; on
    CIFAR-10 the plotted and tabled gain is the mean MSE's (`gain_of_mean_mse_db`, PSNR = 20 dB +
    gain), and the mean of the images' gains is set apart from it on purpose."""
    rows = []
    for method, by_count in gains.items():
        for n, g in by_count.items():
            row = {"method": method, "hints": n, "items": 6, "mean_gain_db": g, "std_gain_db": 0.4,
                   "worst_gain_db": g - 2, "colorfulness_ratio": 0.7}
            rows.append({**row, "mean_gain_db": g + 50, "psnr": 20 + g, "psnr_gray": 20.0,
                         "gain_of_mean_mse_db": g} if cifar else row)
    return rows


def example_module(name: str):  # noqa: ANN201 - the module examples/<name>.py
    """A script of examples/ imported as a module (its `main` is not run)."""
    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
