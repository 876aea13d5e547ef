"""`cae colorize`'s path end to end with PyTorch against onnxruntime, on a Kodak photo and a
12-megapixel one.

Times what `cae colorize` does per photo, except writing the PNG: read and decode the file,
take its luma, predict the chroma at the model's working scale, upsample it and merge it with
the full-size luma (`Colorizer.colorize_image`). The two runtimes differ only in the network
call: the shipped colorizer in PyTorch, or its ONNX graph (`cae.export_onnx`) in onnxruntime
through `cae.apps.export.onnx_colorizer`. The 12-megapixel photo is kodim03 upscaled to
4240x2832 (bicubic) in a temporary folder. The rounds alternate the two runtimes (the CPU may be
shared); medians of the rounds and their ratio are printed, and the network call alone at the
working scale as well.

    python benchmarks/onnx_colorize.py [--rounds 15] [--threads 2] [--photo kodim03.png]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from cae import Colorizer
from cae.apps.export import onnx_colorizer
from cae.core.data import luma
from cae.core.photo import downscale, open_file, rgb_of

REPO = Path(__file__).resolve().parents[1]
# beside the CIFAR-10 copy (CAE_DATA_DIR), else in ../shared/datasets beside the clone
DATASETS = Path(os.environ["CAE_DATA_DIR"]).parent if os.environ.get("CAE_DATA_DIR") else REPO.parent / "shared" / "datasets"
KODAK = DATASETS / "kodak-dev"
BIG = (4240, 2832)


def timed(fn) -> tuple[float, float]:  # noqa: ANN001
    """(wall-clock seconds, CPU seconds of this process's threads) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def alternated(runners: dict, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each runner per round, the order flipped every round."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(timed(runners[name]))
    return times


def report(label: str, times: dict[str, list[tuple[float, float]]]) -> None:
    """Medians and ranges of the wall-clock times, and the medians of the CPU times: on a busy
    machine the wall clock also counts the waits for a core; with one thread the CPU time is the
    work itself (with more, it counts the threads' spinning as well)."""
    for k, kind in enumerate(("wall", "CPU")):
        t = {name: [r[k] for r in rounds] for name, rounds in times.items()}
        med = {name: statistics.median(v) for name, v in t.items()}
        spread = {name: f"{min(v) * 1e3:.0f}-{max(v) * 1e3:.0f}" for name, v in t.items()}
        print(f"{label:<34} {kind:<4}  PyTorch {med['torch'] * 1e3:8.1f} ms ({spread['torch']})   onnxruntime "
              f"{med['onnx'] * 1e3:8.1f} ms ({spread['onnx']})   PyTorch/onnxruntime {med['torch'] / med['onnx']:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of both runtimes")
    p.add_argument("--photo", default=str(KODAK / "kodim03.png"))
    a = p.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each figure as soon as it is measured, also into a file
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        loads = {"torch": lambda: Colorizer.load(device="cpu"), "onnx": lambda: onnx_colorizer(threads=a.threads)}
        colorizers, load_s = {}, {}
        for name, load in loads.items():
            t0 = time.perf_counter()
            colorizers[name] = load()
            load_s[name] = time.perf_counter() - t0
        print(f"loading: PyTorch {load_s['torch']:.2f} s, onnxruntime {load_s['onnx']:.2f} s (export in memory + session)")
        big = Path(tmp) / "big.png"
        with Image.open(a.photo) as img:
            img.convert("RGB").resize(BIG, Image.BICUBIC).save(big, compress_level=1)
        print(f"{a.rounds} alternated rounds, {a.threads} threads each, torch {torch.__version__}")
        for path in (Path(a.photo), big):
            with Image.open(path) as img:
                size = f"{img.width}x{img.height}"
            runs = {name: (lambda c=c, path=path: c.colorize_image(open_file(path))) for name, c in colorizers.items()}
            for name, run in runs.items():  # warm-up: first calls allocate and pick kernels
                run()
            report(f"{path.name} {size}, end to end", alternated(runs, a.rounds))
            small = downscale(luma(rgb_of(open_file(path)).unsqueeze(0)), colorizers["torch"].working_size)
            gray = small.expand(-1, 3, -1, -1)[0]
            nets = {name: (lambda c=c: c(gray)) for name, c in colorizers.items()}
            report(f"  network at {small.shape[-1]}x{small.shape[-2]} (+ merge)", alternated(nets, a.rounds * 4))


if __name__ == "__main__":
    main()
