"""The hint study: what N random hints buy each guided method, on photos and on CIFAR-10.

Protocol: N points at uniformly random pixels, each revealing the mean colour of the 7x7 patch
of the true image around it (cut at the border; written as "#rrggbb", so its chrominance is the
patch's mean chrominance up to 8-bit rounding), given as hints in the hints format; the luma is
the image's own. Each image gets DRAWS draws of HINT_COUNTS[-1] points from a fixed seed, and
the first N of a draw are its N hints (the counts are nested, so the curve is not noise between
counts). Scores: PSNR gain over the gray copy and colorfulness against the truth's
(`cae.experiments.photos.score_photo`); the automatic colorizer is scored at 0 hints beside them,
and the learned guided colorizer at every count (0: its automatic mode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cae.core.hints import Hint, hex_color
from cae.core.metrics import psnr_from_mse
from cae.core.photo import photo_paths, read_image
from cae.core.text import Log
from cae.errors import CaeError
from cae.experiments.guided import METHODS, GuidedBaseline
from cae.experiments.photos import score_photo

HINT_COUNTS = (0, 1, 2, 5, 10, 20, 50)
PATCH = 7
DRAWS = 2
SEED = 0
CIFAR_LIMIT = 1000  # test images scored (the first of the test split; 0 = all 10,000)
PLOT = "hint_study.png"
SET_TITLES = {"photos": "photos", "cifar10-test": "CIFAR-10 test images"}
AUTOMATIC = "automatic"  # the learned colorizer without hints, at 0 hints
GUIDED = "guided"  # the learned guided colorizer (color.hints), at every count from 0


def random_hints(rgb: torch.Tensor, n: int, gen: torch.Generator, patch: int = PATCH) -> list[Hint]:
    """n hints at uniformly random pixels of an image (3,H,W), each the mean colour of the
    patch x patch square around its point (cut at the image's border)."""
    _, h, w = rgb.shape
    xs, ys = torch.randint(w, (n,), generator=gen).tolist(), torch.randint(h, (n,), generator=gen).tolist()
    r = patch // 2
    hints = []
    for x, y in zip(xs, ys):
        mean = rgb[:, max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].mean(dim=(1, 2))
        hints.append(Hint(x, y, hex_color(mean.tolist())))
    return hints


def draw_hints(rgb: torch.Tensor, index: int, draw: int, seed: int = SEED, most: int = HINT_COUNTS[-1]) -> list[Hint]:
    """Image `index`'s draw `draw` of `most` hints, from a seed of its own (the first N: N hints).
    At least the default counts' largest is drawn and cut to `most`, so that a study of fewer counts
    (`--counts 10`) scores the very hints the full study gives at those counts."""
    drawn = max(most, HINT_COUNTS[-1])
    return random_hints(rgb, drawn, torch.Generator().manual_seed(seed + 1_000_003 * draw + index))[:most]


def score_image(rgb: torch.Tensor, hints: list[Hint], counts: Sequence[int], methods: dict) -> list[dict]:
    """Rows (method, hints, scores) of one image and one draw: each method at each count."""
    rows = []
    for n in counts:
        for name, colorizer in methods.items():
            if name == AUTOMATIC and n:
                continue
            pred = colorizer(rgb) if name == AUTOMATIC else colorizer(rgb, hints[:n])
            rows.append({"method": name, "hints": n, **score_photo(pred, rgb)})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per (method, hints): the mean gain over gray (dB) and its spread over the images and draws,
    and colorfulness as mean prediction / mean truth."""
    keys = sorted({(r["method"], r["hints"]) for r in rows}, key=lambda k: (k[0], k[1]))
    out = []
    for method, n in keys:
        sel = [r for r in rows if r["method"] == method and r["hints"] == n]
        gains = np.array([r["gain_db"] for r in sel])
        truth = sum(r["colorfulness_truth"] for r in sel)
        out.append({"method": method, "hints": n, "items": len(sel), "mean_gain_db": float(gains.mean()),
                    "std_gain_db": float(gains.std()), "worst_gain_db": float(gains.min()),
                    "colorfulness_ratio": sum(r["colorfulness"] for r in sel) / truth if truth else float("nan")})
    return out


def _methods(names: Sequence[str], model_dir: str | Path | None, working_size: int,
             guided_dir: str | Path | None = None, guided_size: int | None = None) -> dict:
    """The colorizers scored: the baselines `names` at `working_size` (0: native), the automatic
    colorizer of `model_dir` and the guided one of `guided_dir` (at `guided_size`, None: its own)."""
    from cae.core.photo import Colorizer

    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise CaeError(f"unknown hint method {unknown[0]!r}; use one of {', '.join(METHODS)}")
    methods: dict = {m: GuidedBaseline(m, working_size) for m in names}
    if model_dir is not None:
        methods[AUTOMATIC] = Colorizer.load(model_dir, device="cpu")
    if guided_dir is not None:
        methods[GUIDED] = Colorizer.load(guided_dir, device="cpu", working_size=guided_size)
        if not methods[GUIDED].guided:
            raise CaeError(f"{guided_dir} is a colorizer trained without hints; give a guided one (color.hints)")
    return methods


def study_photos(photos: str | Path, names: Sequence[str] = tuple(METHODS), counts: Sequence[int] = HINT_COUNTS,
                 draws: int = DRAWS, seed: int = SEED, model_dir: str | Path | None = None,
                 working_size: int = 256, log: Log = print, guided_dir: str | Path | None = None,
                 limit: int = 0) -> list[dict]:
    """Per-image rows of the study on every photo of a folder (the first `limit`, by name; 0: all)."""
    methods = _methods(names, model_dir, working_size, guided_dir)
    rows = []
    for i, p in enumerate(photo_paths(photos)[:limit or None]):
        rgb = read_image(p)
        for d in range(draws):
            hints = draw_hints(rgb, i, d, seed, max(counts))
            rows += [{"set": "photos", "name": p.name, "draw": d, **r}
                     for r in score_image(rgb, hints, counts, methods)]
        gains = ", ".join(f"{r['method']} {r['hints']}: {r['gain_db']:+.2f}" for r in rows if r["name"] == p.name)
        log(f"hint study: {p.name} ({i + 1} photos), gain over gray in dB per method and hints: {gains}")
    return rows


def study_cifar(images: torch.Tensor, names: Sequence[str] = tuple(METHODS), counts: Sequence[int] = HINT_COUNTS,
                draws: int = DRAWS, seed: int = SEED, model_dir: str | Path | None = None,
                log: Log = print, guided_dir: str | Path | None = None) -> list[dict]:
    """Per-image rows of the study on CIFAR-10 images (N,3,32,32) uint8, at their native size."""
    methods = _methods(names, model_dir, 0, guided_dir, 0)
    rows = []
    for i, img in enumerate(images):
        rgb = img.float().div(255)
        for d in range(draws):
            hints = draw_hints(rgb, i, d, seed, max(counts))
            rows += [{"set": "cifar10-test", "name": str(i), "draw": d, **r}
                     for r in score_image(rgb, hints, counts, methods)]
        if (i + 1) % 200 == 0:
            log(f"hint study: {i + 1} of {len(images)} CIFAR-10 test images")
    return rows


def cifar_psnr(rows: list[dict]) -> list[dict]:
    """CIFAR-10 as the project scores it: PSNR of the mean MSE over the images (and of the gray
    copy's), per (method, hints); rows carry each image's PSNR, so the MSE is recovered from it."""
    def mse(p: float) -> float:
        return 10 ** (-p / 10)

    out = []
    for s in summarize(rows):
        sel = [r for r in rows if r["method"] == s["method"] and r["hints"] == s["hints"]]
        p, g = (psnr_from_mse(float(np.mean([mse(r[k]) for r in sel]))) for k in ("psnr", "psnr_gray"))
        out.append({**s, "psnr": p, "psnr_gray": g, "gain_of_mean_mse_db": p - g})
    return out


def cifar_test_images(data_dir: str | Path | None = None, limit: int = CIFAR_LIMIT,
                      data=None) -> torch.Tensor:  # noqa: ANN001 - a Cifar10
    """The first `limit` (0: all) images (N,3,32,32) uint8 of the CIFAR-10 test split the runs use
    (`split_indices` at the default split seed: a seeded, class-balanced sample of the 60,000);
    `data`: the dataset already loaded (a `cae.core.data.Cifar10`), else it is read from `data_dir`."""
    from cae.core.config import DataConfig
    from cae.core.data import load_cifar10, split_indices

    data = data if data is not None else load_cifar10(data_dir)
    test = split_indices(data.labels, DataConfig().seed)["test"]
    return data.images[test[:limit] if limit > 0 else test]


def run_hint_study(out: str | Path, photos: str | Path | None = None, cifar: torch.Tensor | None = None,
                   names: Sequence[str] = tuple(METHODS), counts: Sequence[int] = HINT_COUNTS, draws: int = DRAWS,
                   seed: int = SEED, model_dir: str | Path | None = None, log: Log = print,
                   guided_dir: str | Path | None = None, photo_limit: int = 0,
                   photo_names: Sequence[str] | None = None) -> dict:
    """The study on a photo folder (its first `photo_limit` photos, 0: all; there the baselines
    `photo_names`, None: `names`) and/or CIFAR-10 test images: writes hint_study.csv (a row per
    image, draw, method and count), hint_study.json (settings and the summary per set, method and
    count) and hint_study.png (`plot_hint_study`). Returns the JSON's content."""
    from cae.core.runs import write_csv, write_json

    if photos is None and cifar is None:
        raise CaeError("the hint study needs a photo folder (--photos DIR) or the CIFAR-10 test split")
    if min(counts) < 0 or draws < 1:
        raise CaeError(f"hint counts must be >= 0 and draws >= 1, got {list(counts)} and {draws}")
    rows, summary = [], {}
    if photos is not None:
        rows += (r := study_photos(photos, names if photo_names is None else photo_names, counts, draws, seed,
                                   model_dir, log=log, guided_dir=guided_dir, limit=photo_limit))
        summary["photos"] = summarize(r)
    if cifar is not None:
        rows += (r := study_cifar(cifar, names, counts, draws, seed, model_dir, log=log, guided_dir=guided_dir))
        summary["cifar10-test"] = cifar_psnr(r)
    result = {"photos": None if photos is None else str(photos), "photo_images": len({r["name"] for r in rows
                                                                                      if r["set"] == "photos"}),
              "cifar_images": 0 if cifar is None else len(cifar),
              "counts": list(counts), "draws": draws, "seed": seed, "patch": PATCH, "summary": summary}
    write_csv(Path(out) / "hint_study.csv", rows, list(rows[0]))
    write_json(Path(out) / "hint_study.json", result)
    plot_hint_study(summary, Path(out) / PLOT)
    for name, table in summary.items():
        for s in table:
            log(f"{name}: {s['method']:>9} {s['hints']:>3} hints: {plotted_gain(s):+.2f} dB over gray, "
                f"colorfulness {s['colorfulness_ratio']:.0%}")
    return result


def plotted_gain(s: dict) -> float:
    """The gain a summary row is plotted and tabled by: on CIFAR-10 the gain of the mean MSE (a
    near-gray 32x32 image's own gain is unbounded), elsewhere the mean of the images' gains."""
    return s.get("gain_of_mean_mse_db", s["mean_gain_db"])


def method_rank(method: str) -> tuple[int, str]:
    """A method's place in the study's fixed order: the baselines, the automatic colorizer, the
    guided one (then any other by name); its colour in the plot, its column in the report."""
    order = [*METHODS, AUTOMATIC, GUIDED]
    return (order.index(method) if method in order else len(order), method)


def ordered_sets(summary: dict[str, list[dict]]) -> list[tuple[str, list[dict]]]:
    """The summary's sets in SET_TITLES' order (the photos first), whatever order a file kept."""
    order = list(SET_TITLES)
    return sorted(summary.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))


def gain_curves(table: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """A set's summary as (hints, gain) points per method, by hints; methods in their fixed order."""
    names = sorted({s["method"] for s in table}, key=method_rank)
    return {m: sorted((s["hints"], plotted_gain(s)) for s in table if s["method"] == m) for m in names}


def plot_hint_study(summary: dict[str, list[dict]], path: Path):  # noqa: ANN201 - matplotlib Figure
    """hint_study.png: the gain over gray against the number of hints, one panel per set and one
    line per method (the automatic colorizer, scored at 0 hints only, as a level across the
    panel); a symmetric-log x axis, so 0 hints shows beside 1 and 50. Returns the figure."""
    from cae.core.plots import figure, palette, save_figure

    fig = figure(figsize=(5 * len(summary), 4))
    axes = fig.subplots(1, len(summary), squeeze=False)[0]
    everyone = sorted({s["method"] for table in summary.values() for s in table}, key=method_rank)
    for ax, (name, table) in zip(axes, ordered_sets(summary)):
        curves = gain_curves(table)
        counts = sorted({n for pts in curves.values() for n, _ in pts})
        for method, pts in curves.items():
            xs, ys = zip(*pts)
            style = {"color": palette()(everyone.index(method)), "label": method, "gid": method, "ms": 5}
            if len(pts) == 1 and counts[-1] > xs[0]:  # one count (automatic): its level across the counts
                ax.plot((xs[0], counts[-1]), (ys[0], ys[0]), ":", marker="o", markevery=[0], **style)
            else:
                ax.plot(xs, ys, "-o", **style)
        ax.axhline(0, color="0.5", lw=0.8)  # the gray copy
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(-0.3, counts[-1] * 1.15)  # symlog would leave room for negative counts
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.set_xlabel("hints (random points, each the colour of its 7x7 patch)")
        ax.set_ylabel("PSNR gain over gray, dB" + (" (of the mean MSE)" if name == "cifar10-test" else ""))
        ax.set_title(SET_TITLES.get(name, name))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)
    return fig
