"""The README's results table, generated from a finished `cae reproduce` folder.

`cae report DIR --readme README.md` copies the few result files the table is made from into
`docs/results/` beside the README (a snapshot that is committed) and rewrites the block between
the README's `<!-- results:begin -->` and `<!-- results:end -->` markers. A test regenerates the
block from the snapshot and compares, so the README cannot drift from the latest full run. The
shipped colorizer's row is read from its weights' own record (cae/weights/colorizer), which a
full run only measures again, so it follows a new decoding of the same weights.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from cae.core import runs
from cae.errors import CaeError
from cae.core.text import duration, number

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
SNAPSHOT = Path("docs") / "results"  # relative to the README's folder
FILES = ("reproducibility.json", "reference/test_metrics.json", "study/results.csv", "study/correlation.json",
         "colorize/results.csv", "colorize/photos/photos.json")
OPTIONAL = ("frontier/frontier.csv", "frontier/frontier.json")  # with `cae reproduce --frontier`


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _error_row(label: str, mse: float, colorfulness_ratio: float) -> list[str]:
    return [f"| {label} | | {number(mse, 'mse')} | colorfulness {colorfulness_ratio:.0%} of the truth's |"]


def _shipped_colorizer_row() -> list[str]:
    # from the shipped weights' own record, not the run's copy: a full run only measures these
    # weights again on the same split (to ~1e-6), and a new decoding of them needs no new full run
    t = runs.read_json(runs.shipped_run("colorizer") / runs.TEST_METRICS, ("mse", "colorfulness", "colorfulness_truth"))
    return _error_row("the shipped colorizer (config `colorize-best`), RGB error; its recorded test figures",
                      t["mse"], t["colorfulness"] / t["colorfulness_truth"])


def _gray_row(color: list[dict[str, str]]) -> list[str]:
    row = next((r for r in color if r["name"] == "baseline (a) gray"), None)
    return [] if row is None else _error_row("the gray image (baseline)", float(row["mse"]),
                                             float(row["colorfulness_ratio"]))


def without_out(command: str) -> str:
    """The command without its `--out FOLDER` (a path on the machine that ran it)."""
    words = command.split()
    drop = {i for i, w in enumerate(words) if w == "--out"} | {i + 1 for i, w in enumerate(words) if w == "--out"}
    return " ".join(w for i, w in enumerate(words) if i not in drop and not w.startswith("--out="))


def results_block(root: Path) -> str:
    """The Markdown block (a line naming the run and its machine, the table, the correlation)
    for the result folder (or snapshot) `root`."""
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise CaeError(f"{root} lacks {', '.join(missing)}: run a full `cae reproduce` into it first")
    repro = runs.read_json(root / "reproducibility.json")
    ref = runs.read_json(root / "reference/test_metrics.json", ("mse",))
    study, color = _rows(root / "study/results.csv"), _rows(root / "colorize/results.csv")
    corr = runs.read_json(root / "study/correlation.json")
    cae_rows = [r for r in study if r["kind"] != "pca"]
    best = min(cae_rows, key=lambda r: float(r["test_mse"]))
    machine = repro["machine"]
    lines = [f"Measured by `{without_out(repro['command'])}` in {duration(repro['total_seconds'])} on "
             f"{machine.get('cpu', machine.get('cpu_model'))}, {machine['cpu_count']} cores, "
             + (f"with `{machine['speed_settings']}`, " if machine.get("speed_settings") else "")
             + f"torch {repro['versions'].get('torch', '?')}; test split of the shared CIFAR-10 copy.",
             "", "| | latent | test MSE | note |", "|---|---|---|---|",
             f"| reference CAE | {number(ref['latent_size'])} | {number(ref['mse'], 'mse')} | "
             f"PSNR {number(ref['psnr'], 'psnr')} dB, SSIM {number(ref['ssim'], 'ssim')} |",
             f"| best of the {len(cae_rows)} study variants: {best['name']} | {number(best['latent_size'])} | "
             f"{number(best['test_mse'], 'mse')} | {number(best['params'])} parameters |"]
    lines += [f"| PCA with {number(r['latent_size'])} components (the best linear code) | "
              f"{number(r['latent_size'])} | {number(r['test_mse'], 'mse')} | |"
              for r in study if r["kind"] == "pca" and int(r["latent_size"]) in (64, 256, 1024)]
    lines += _shipped_colorizer_row()
    lines += _gray_row(color)
    scored = runs.read_json(root / "colorize/photos/photos.json")
    photos = scored["summary"]
    lines += [f"| the colorizer on {photos['photos']} real photos ({Path(scored['folder']).name}), PSNR gain over "
              "their gray copies | | "
              f"| mean {photos['mean_gain_db']:+.2f} dB, worst {photos['worst_gain_db']:+.2f} dB; colorfulness "
              f"{photos['colorfulness_ratio']:.0%} of the photos' own |"]
    lines += _frontier_lines(root)
    lines += ["", f"Log latent size against log test MSE over the {corr['n']} variants: Spearman ρ = "
                  f"{number(corr['spearman_r'], 'spearman_r')} (p = {number(corr['spearman_p'], 'spearman_p')}), "
                  f"Pearson r = {number(corr['pearson_r'], 'pearson_r')} (p = {number(corr['pearson_p'], 'pearson_p')})."]
    return "\n".join(lines)


def _frontier_lines(root: Path) -> list[str]:
    """The frontier study's row: its winner (the largest margin under PCA at latent <= 256, over
    its seeds) or, when nothing wins, the closest CAE; which sizes it wins at; its training time."""
    if not all((root / f).is_file() for f in OPTIONAL):
        return []
    front = _rows(root / "frontier/frontier.csv")
    result = runs.read_json(root / "frontier/frontier.json", ("models",))
    models = result["models"]
    wins = [r["latent_size"] for r in front if float(r["ratio_to_pca"]) < 1]
    name = result.get("winner") or min(front, key=lambda r: float(r["ratio_to_pca"]))["best_mse_name"]
    (m,) = [m for m in models if m["name"] == name]
    (row,) = [r for r in front if int(r["latent_size"]) == m["latent_size"]]
    spread = f" ± {number(m['mse_std'], 'mse')} ({m['seeds']} seeds)" if m["seeds"] > 1 else ""
    where = (f"beats PCA at latent {', '.join(wins)} of {len(front)} sizes" if wins
             else f"beats PCA at none of {len(front)} sizes")
    seconds = sum(x["train_seconds"] * x["seeds"] for x in models)
    return [f"| frontier study: {m['name']} (config `beats-pca`) | {number(m['latent_size'])} | "
            f"{number(m['mse'], 'mse')}{spread} | {_versus_pca(m['mse'] / float(row['pca_mse']), m['latent_size'])}; "
            f"{number(m['params'])} parameters |",
            f"| frontier study: {sum(x['seeds'] for x in models)} CAEs of 3 widths | | | the best CAE {where}; "
            f"{duration(seconds)} of training (one thread per run) |"]


def _versus_pca(ratio: float, k: int) -> str:
    return f"{1 - ratio:.0%} under PCA-{k}" if ratio < 1 else f"{ratio:.2f}x PCA-{k}'s error"


def replace_block(text: str, block: str) -> str:
    """`text` with the part between the markers replaced by `block`."""
    if BEGIN not in text or END not in text:
        raise CaeError(f"the README has no {BEGIN} ... {END} markers to write the results between")
    head, rest = text.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{block}\n{END}{rest.split(END, 1)[1]}"


def update_readme(results: Path, readme: Path) -> Path:
    """Snapshot the result files next to the README and rewrite its results block from them, and
    the shipped models' cards when the README is a checkout's (`cae.report.card`)."""
    from cae.report.card import WEIGHTS, write_model_cards

    snapshot = readme.parent / SNAPSHOT
    for name in FILES:
        if not (results / name).is_file():
            raise CaeError(f"{results / name} not found: run a full `cae reproduce --out {results}` first")
    for name in FILES + tuple(f for f in OPTIONAL if (results / f).is_file()):
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(results / name, snapshot / name)
    runs.atomic_write_text(readme, replace_block(readme.read_text(), results_block(snapshot)))
    if (readme.parent / WEIGHTS).is_dir():
        write_model_cards(snapshot, readme.parent / WEIGHTS)
    return snapshot
