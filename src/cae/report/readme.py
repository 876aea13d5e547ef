"""The README's results table, generated from a finished `cae reproduce` folder.

`cae report DIR --readme README.md` copies the few result files the table is made from into
`docs/results/` beside the README (a snapshot that is committed) and rewrites the block between
the README's `<!-- results:begin -->` and `<!-- results:end -->` markers. A test regenerates the
block from the snapshot and compares, so the README cannot drift from the latest full run.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from cae.core import runs
from cae.errors import CaeError
from cae.report.content import fmt

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
SNAPSHOT = Path("docs") / "results"  # relative to the README's folder
FILES = ("reproducibility.json", "reference/test_metrics.json", "study/results.csv", "study/correlation.json",
         "colorize/results.csv")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _best_variant(study: list[dict[str, str]]) -> dict[str, str]:
    cae_rows = [r for r in study if r.get("kind", "cae") != "pca" and not r["name"].startswith("pca")]
    return min(cae_rows, key=lambda r: float(r["test_mse"] if "test_mse" in r else r["mse"]))


def _mse(row: dict[str, str]) -> str:
    return row["test_mse"] if "test_mse" in row else row["mse"]


def _pca_rows(study: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in study if r.get("kind") == "pca" or r["name"].startswith("pca")]


def _colorize_line(color: list[dict[str, str]], name: str, label: str) -> str:
    row = next((r for r in color if r["name"] == name), None)
    if row is None:
        return ""
    share = float(row["colorfulness"]) / float(row["colorfulness_truth"]) if row.get("colorfulness_truth") else None
    note = f"colorfulness {share:.0%} of the truth's" if share is not None else ""
    return f"| {label} | | {fmt(row['mse'], 'mse')} | {note} |"


def results_block(root: Path) -> str:
    """The Markdown block (table and the line naming the run's machine) for result folder `root`."""
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise CaeError(f"{root} lacks {', '.join(missing)}: run a full `cae reproduce` into it first")
    repro = runs.read_json(root / "reproducibility.json")
    ref = runs.read_json(root / "reference/test_metrics.json", ("mse",))
    study, color = _rows(root / "study/results.csv"), _rows(root / "colorize/results.csv")
    corr = runs.read_json(root / "study/correlation.json")
    best, pca = _best_variant(study), _pca_rows(study)
    machine = repro.get("machine", {})
    lines = [f"Measured by `{repro.get('command', 'cae reproduce')}` on {machine.get('cpu', machine.get('cpu_model'))}, "
             f"torch {repro.get('versions', {}).get('torch', '?')}, in {fmt(repro.get('total_seconds'), 'seconds')}.",
             "", "| | latent | test MSE | note |", "|---|---|---|---|",
             f"| reference CAE | {fmt(ref['latent_size'])} | {fmt(ref['mse'], 'mse')} | "
             f"PSNR {fmt(ref['psnr'], 'psnr')} dB, SSIM {fmt(ref['ssim'], 'ssim')} |",
             f"| best study variant: {best['name']} | {fmt(best['latent_size'])} | {fmt(_mse(best), 'mse')} | "
             f"{fmt(best['params'])} parameters |"]
    lines += [f"| PCA-{fmt(r['latent_size'])} (the best linear code) | {fmt(r['latent_size'])} | "
              f"{fmt(_mse(r), 'mse')} | |" for r in pca if r["latent_size"] in ("64", "256", "1024")]
    lines += [line for line in (_colorize_line(color, "best", "colorizer (shipped config), RGB error"),
                                _colorize_line(color, "baseline (a) gray", "gray image (baseline)")) if line]
    spearman = corr.get("log_latent_vs_log_mse", corr).get("spearman", {})
    if spearman:
        lines += ["", f"Latent size against test MSE over the study's variants: Spearman ρ = "
                      f"{spearman.get('r', float('nan')):.2f} (p = {spearman.get('p', float('nan')):.2g})."]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """`text` with the part between the markers replaced by `block`."""
    if BEGIN not in text or END not in text:
        raise CaeError(f"the README has no {BEGIN} ... {END} markers to write the results between")
    head, rest = text.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{block}\n{END}{rest.split(END, 1)[1]}"


def update_readme(results: Path, readme: Path) -> Path:
    """Snapshot the result files next to the README and rewrite its results block from them."""
    snapshot = readme.parent / SNAPSHOT
    for name in FILES:
        if not (results / name).is_file():
            raise CaeError(f"{results / name} not found: run a full `cae reproduce --out {results}` first")
    for name in FILES:
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(results / name, snapshot / name)
    runs.atomic_write_text(readme, replace_block(readme.read_text(), results_block(snapshot)))
    return snapshot
