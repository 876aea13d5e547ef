"""How far a hint reaches: the guided colorizer's chroma error against the distance to the nearest hint.

    python examples/hint_reach.py [--photos DIR] [--hints 10] [--model RUN]

On every photo of a folder (kodak-dev by default), with the hint study's random hints (its
protocol and seeds, `cae hint-study`), each pixel's squared chroma error (BT.601 Cb and Cr, summed)
is grouped by the distance from the pixel to the nearest hint, counted in pixels of the guided
colorizer's working scale, and averaged per group for:

- the guided colorizer with the hints, and with none (its automatic mode);
- inverse-distance weighting of the hints (`cae.GuidedBaseline("idw")`);
- an oracle that is given the truth and picks, at each pixel, the hint whose colour is closest to
  it: what a colorizer could reach if it only had to choose, for every pixel, which hint it
  belongs to.

docs/guided.md reads the printed table; it takes seconds on kodak-dev.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import cae
from cae.core.color import chroma
from cae.core.photo import photo_paths, read_image, working_shape
from cae.experiments.hint_study import DRAWS, draw_hints

BANDS = (0, 1, 2, 4, 8, 16, float("inf"))  # distance to the nearest hint, in working pixels
KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "kodak-dev"


def nearest_hint(hints: list, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's distance (H,W) to the nearest hint, in the photo's pixels, and the chroma
    (2,K) of the hints' colours."""
    points = torch.tensor([[hint.y, hint.x] for hint in hints])
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    d2 = torch.full((h, w), float("inf"))
    for py, px in points:  # one hint at a time: an (H,W,K) array of a 12 MP photo would not fit
        d2 = torch.minimum(d2, (ys - py) ** 2 + (xs - px) ** 2)
    colours = chroma(torch.tensor([hint.rgb for hint in hints]).view(-1, 3, 1, 1))[:, :, 0, 0].t()
    return d2.sqrt(), colours


def oracle(truth: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """At each pixel of `truth` (2,H,W), the hint colour (of `colours`, (2,K)) closest to it."""
    best = torch.stack([((truth - c.view(2, 1, 1)) ** 2).sum(0) for c in colours.t()]).argmin(0)
    return colours[:, best]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", default=str(KODAK), help="a folder of photos (default: kodak-dev)")
    p.add_argument("--hints", type=int, default=10, help="random hints per photo (default 10)")
    p.add_argument("--model", default=None, help="a guided run folder (default: the shipped guided colorizer)")
    a = p.parse_args()
    guided = cae.Colorizer.load(a.model, guided=True)
    idw = cae.GuidedBaseline("idw")
    names = ("guided, hints", "guided, no hints", "inverse distance", "oracle: best hint's colour")
    sums = torch.zeros(len(names), len(BANDS) - 1, dtype=torch.float64)
    counts = torch.zeros(len(BANDS) - 1, dtype=torch.float64)
    for i, path in enumerate(photo_paths(a.photos)):
        rgb = read_image(path)
        _, h, w = rgb.shape
        scale = working_shape(h, w, guided.working_size)[0] / h  # photo pixels to working pixels
        truth = chroma(rgb.unsqueeze(0))[0]
        for draw in range(DRAWS):
            hints = draw_hints(rgb, i, draw, most=a.hints)
            dist, colours = nearest_hint(hints, h, w)
            band = torch.bucketize(dist * scale, torch.tensor(BANDS[1:-1]), right=True)
            preds = [chroma(guided(rgb, hints).unsqueeze(0))[0], chroma(guided(rgb).unsqueeze(0))[0],
                     chroma(idw(rgb, hints).unsqueeze(0))[0], oracle(truth, colours)]
            for k, pred in enumerate(preds):
                err = ((pred - truth) ** 2).sum(0).double()
                sums[k].index_add_(0, band.flatten(), err.flatten())
            counts.index_add_(0, band.flatten(), torch.ones(h * w, dtype=torch.float64))
    print(f"{a.hints} hints, {a.photos}: chroma MSE (Cb and Cr summed) by distance to the nearest hint")
    print("| distance (working pixels) | pixels | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for j in range(len(BANDS) - 1):
        hi = "" if BANDS[j + 1] == float("inf") else f"{BANDS[j + 1]:g}"
        row = " | ".join(f"{sums[k, j] / counts[j]:.5f}" if counts[j] else "" for k in range(len(names)))
        print(f"| {BANDS[j]:g}-{hi} | {counts[j] / counts.sum():.1%} | {row} |")
    print("| all | 100% | " + " | ".join(f"{sums[k].sum() / counts.sum():.5f}" for k in range(len(names))) + " |")


if __name__ == "__main__":
    main()
