"""The architecture study: study files, and the comparison of their finished runs.

A study file (TOML) holds defaults and variants:

    analysis = "architecture"        # or "frontier" (cae.experiments.frontier): what the results are
    epochs = 10                      # default for every variant
    [train]                          # optional TrainConfig overrides for every variant
    lr = 3e-3
    [data]                           # optional DataConfig overrides (split seed, limit, ...)
    seed = 0
    [[variant]]
    name = "reference"               # the run folder OUT/<name>/
    arch = "reference"               # a preset name or a spec (see cae.core.spec)
    axis = "reference"               # what the variant changes: depth, channels, kernel, ...
    note = "the handout's 9-layer CAE"
    lr = 2e-3                        # optional per-variant TrainConfig overrides

Every variant's shape trace is checked before anything trains. Each variant is an ordinary run
folder (`cae train` format), so finished ones are skipped and an interrupted one resumes.
Afterwards: the PCA baseline (OUT/pca.json), OUT/results.csv, OUT/results.md,
OUT/correlation.json, OUT/mse_vs_latent.png and OUT/mse_vs_params.png.
"""

from __future__ import annotations

import copy
import csv
import math
import re
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from cae.core import runs
from cae.core.spec import ArchInfo, expand, trace
from cae.core.config import DataConfig, RunConfig, TrainConfig, dataclass_from_dict, file_or_shipped
from cae.core.text import Log
from cae.core.stability import find_instability
from cae.experiments.frontier import write_frontier
from cae.errors import CaeError


IMAGE_SIZE = 3 * 32 * 32
STUDY_COPY = "study.toml"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
CORRELATION = "correlation.json"
PCA_JSON = "pca.json"
COLUMNS = ("name", "axis", "arch", "latent_shape", "latent_size", "compression", "params", "macs", "epochs",
           "train_seconds", "val_mse", "test_mse", "psnr", "ssim", "pca_mse", "ratio_to_pca", "kind", "note")
INT_COLUMNS = {"latent_size", "params", "macs", "epochs"}
TEXT_COLUMNS = {"name", "axis", "arch", "latent_shape", "kind", "note"}
TOP_KEYS = {"title", "description", "analysis", "epochs", "train", "data", "variant"}
ANALYSES = ("architecture", "frontier")  # what write_results makes of the runs (cae.experiments.frontier)
VARIANT_KEYS = {"name", "arch", "axis", "note"}
TRAIN_KEYS = {f.name for f in fields(TrainConfig)}
PCA_GRID = (16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072)  # the PCA line of the plot


@dataclass
class Variant:
    """One architecture of the study, with its full run config and shape trace."""

    name: str
    arch: str
    axis: str
    note: str
    cfg: RunConfig
    info: ArchInfo

    @property
    def cost(self) -> float:
        """Relative training cost: multiply-adds per image times epochs."""
        return float(self.info.macs) * self.cfg.train.epochs


@dataclass
class Study:
    """A parsed, validated study file."""

    path: Path
    text: str
    title: str
    variants: list[Variant] = field(default_factory=list)
    analysis: str = "architecture"


# ----------------------------------------------------------------------------- the study file
SHIPPED_STUDIES = Path(__file__).resolve().parents[1] / "studies"


def study_file(name: str | Path) -> Path:
    """A study file: a path, or the name of one shipped with cae ('architecture' or
    'architecture.toml', from `cae/studies/`)."""
    return file_or_shipped(name, SHIPPED_STUDIES, "study", ".toml file")


def load_study(path: str | Path, epochs: int | None = None, limit: int | None = None,
               data_dir: str | None = None) -> Study:
    """Read and validate a study file; every variant is traced, an impossible one refused by name.

    `epochs`, `limit` and `data_dir` (the CLI flags) override the file for every variant.
    """
    path = study_file(path)
    text = path.read_text()
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CaeError(f"study file {path} is not valid TOML: {e}") from None
    _no_unknown(d, TOP_KEYS, f"study {path}")
    base = RunConfig(task="reconstruct")
    base.train = dataclass_from_dict(TrainConfig, {**d.get("train", {}), **({"epochs": d["epochs"]} if "epochs" in d else {})},
                            f"study {path} [train]")
    base.data = dataclass_from_dict(DataConfig, d.get("data", {}), f"study {path} [data]")
    if data_dir is not None:
        base.data.dir = str(data_dir)
    if limit is not None:
        base.data.limit = limit
    entries = d.get("variant", [])
    if not isinstance(entries, list) or not entries:
        raise CaeError(f"study {path} has no [[variant]] entries; add at least one with a name and an arch")
    analysis = d.get("analysis", "architecture")
    if analysis not in ANALYSES:
        raise CaeError(f"study {path}: analysis {analysis!r} is not one of {', '.join(ANALYSES)}")
    study = Study(path, text, str(d.get("title", path.stem)), analysis=analysis)
    for i, v in enumerate(entries, 1):
        study.variants.append(_parse_variant(v, path, i, base, epochs, {w.name for w in study.variants}))
    return study


def _parse_variant(v: Any, path: Path, i: int, base: RunConfig, epochs: int | None, taken: set[str]) -> Variant:
    """The i-th [[variant]] table on top of the study's defaults, traced; refused by name if impossible."""
    where = f"study {path}, variant {i}"
    if not isinstance(v, dict):
        raise CaeError(f"{where}: expected a [[variant]] table")
    _no_unknown(v, VARIANT_KEYS | TRAIN_KEYS, where)
    name, arch = v.get("name"), v.get("arch")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise CaeError(f"{where}: name {name!r} must be a folder-safe word (letters, digits, . _ -)")
    if name in taken or name.startswith("pca-"):
        raise CaeError(f"{where}: name {name!r} is {'reserved' if name.startswith('pca-') else 'used twice'}; "
                       "give every variant its own name")
    if not isinstance(arch, str) or not arch.strip():
        raise CaeError(f"{where} ({name}): needs an arch (a preset name or a spec)")
    cfg = copy.deepcopy(base)
    cfg.arch = arch
    overrides = {k: v[k] for k in v if k in TRAIN_KEYS}
    cfg.train = dataclass_from_dict(TrainConfig, {**_asdict(base.train), **overrides}, f"{where} ({name})")
    if epochs is not None:
        cfg.train.epochs = epochs
    try:
        cfg.validate()
        info = trace(arch)
    except CaeError as e:
        raise CaeError(f"study {path}: variant {name!r} is refused: {e}") from None
    return Variant(name, arch, str(v.get("axis", "")), str(v.get("note", "")), cfg, info)


def _no_unknown(d: dict, known: set[str], where: str) -> None:
    unknown = set(d) - known
    if unknown:
        raise CaeError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")


def _asdict(obj: Any) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


# ----------------------------------------------------------------------------- PCA baseline
def pca_results(study: Study, out: Path, data: Any, force: bool = False, log: Log = print) -> dict[int, dict]:
    """PCA test metrics for the study's latent sizes and the plot grid, cached in OUT/pca.json."""
    from cae.core.data import split_indices
    from cae.experiments.pca import evaluate_pca, fit_pca

    dcfg = study.variants[0].cfg.data
    ks = sorted({min(v.info.latent_size, IMAGE_SIZE) for v in study.variants} | set(PCA_GRID))
    key = {"split_seed": dcfg.seed, "limit": dcfg.limit}
    cache = out / PCA_JSON
    if cache.is_file() and not force:
        saved = runs.read_json(cache)
        have = {int(k): r for k, r in saved.get("results", {}).items()}
        if all(saved.get(k) == val for k, val in key.items()) and set(ks) <= set(have):
            return have
    split = split_indices(data.labels, dcfg.seed, dcfg.limit)
    t0 = time.perf_counter()
    fit = fit_pca(data.images[split["train"]])
    results = evaluate_pca(fit, data.images[split["test"]], ks)
    explained = (fit.variances.cumsum(0) / fit.variances.sum()).tolist()
    runs.write_json(cache, {**key, "n_train": len(split["train"]), "n_test": len(split["test"]),
                            "seconds": time.perf_counter() - t0,
                            "explained_variance": {str(k): explained[min(k, fit.max_k) - 1] for k in ks},
                            "results": {str(k): {m: _finite(r[m]) for m in ("mse", "psnr", "ssim", "k")}
                                        for k, r in results.items()}})
    log(f"PCA fitted on {len(split['train'])} training images in {time.perf_counter() - t0:.0f}s: " +
        ", ".join(f"PCA-{k} {results[k]['mse']:.5f}" for k in (64, 128, 256, 512, 1024) if k in results))
    return {k: {m: _finite(r[m]) for m in ("mse", "psnr", "ssim", "k")} for k, r in results.items()}


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


# ----------------------------------------------------------------------------- statistics
def correlation(x: list[float], y: list[float]) -> dict[str, Any]:
    """Pearson and Spearman correlation of log x and log y (scipy.stats); None where n < 3."""
    from scipy import stats

    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    n = len(lx)
    if n < 3 or np.ptp(lx) == 0 or np.ptp(ly) == 0:
        return {"pearson_r": None, "pearson_p": None, "spearman_r": None, "spearman_p": None, "n": n}
    p, s = stats.pearsonr(lx, ly), stats.spearmanr(lx, ly)
    return {"pearson_r": float(p.statistic), "pearson_p": float(p.pvalue),
            "spearman_r": float(s.statistic), "spearman_p": float(s.pvalue), "n": n}


# ----------------------------------------------------------------------------- results
def variant_row(v: Variant, run_dir: Path, pca: dict[int, dict]) -> dict[str, Any]:
    """One results row from a finished run folder and the PCA figures."""
    m = runs.read_json(run_dir / runs.TEST_METRICS, ("mse", "psnr", "ssim", "val_mse"))
    k = min(v.info.latent_size, IMAGE_SIZE)
    pca_mse = pca[k]["mse"]
    jump = find_instability(runs.read_metrics_csv(run_dir / runs.METRICS)) if (run_dir / runs.METRICS).is_file() else None
    unstable = f"unstable at {jump.text()}; tested at epoch {m.get('best_epoch', '?')}" if jump else ""
    return {"name": v.name, "axis": v.axis, "arch": expand(v.arch), "kind": "conv",
            "note": "; ".join(n for n in (v.note, unstable) if n), "unstable_epoch": jump and jump.epoch,
            "latent_shape": "x".join(map(str, v.info.latent_shape)), "latent_size": v.info.latent_size,
            "compression": IMAGE_SIZE / v.info.latent_size, "params": v.info.params, "macs": v.info.macs,
            "epochs": int(m.get("epochs", v.cfg.train.epochs)), "train_seconds": m.get("train_seconds"),
            "val_mse": m["val_mse"], "test_mse": m["mse"], "psnr": m["psnr"], "ssim": m["ssim"],
            "pca_mse": pca_mse, "ratio_to_pca": m["mse"] / pca_mse if pca_mse else None}


def pca_rows(study: Study, pca: dict[int, dict]) -> list[dict[str, Any]]:
    """The `pca-<k>` rows: one per latent size of the study (k capped at 3072)."""
    rows = []
    for k in sorted({min(v.info.latent_size, IMAGE_SIZE) for v in study.variants}):
        r = pca[k]
        rows.append({"name": f"pca-{k}", "axis": "pca", "arch": f"PCA, top {k} components", "kind": "pca",
                     "latent_shape": str(k), "latent_size": k, "compression": IMAGE_SIZE / k,
                     "test_mse": r["mse"], "psnr": r["psnr"], "ssim": r["ssim"], "pca_mse": r["mse"],
                     "ratio_to_pca": 1.0, "note": "linear baseline fitted on the training split" + (
                         f" (only {r['k']} components: fewer training images than {k})" if r["k"] < k else "")})
    return rows


def write_results(study: Study, out: Path, data: Any, force: bool = False, log: Log = print) -> list[dict]:
    """PCA baseline, results.csv/.md, correlation.json and the plots from the finished runs (for
    a frontier study: results.csv, then `cae.experiments.frontier.write_frontier`'s files)."""
    pca = pca_results(study, out, data, force, log)
    conv = [variant_row(v, out / v.name, pca) for v in study.variants]
    rows = conv + pca_rows(study, pca)
    runs.write_csv(out / RESULTS_CSV, [{c: _cell(r.get(c)) for c in COLUMNS} for r in rows], COLUMNS)
    if study.analysis == "frontier":
        write_frontier(rows, pca, out, log)
        return rows
    corr = correlation([r["latent_size"] for r in conv], [r["test_mse"] for r in conv])
    corr_p = correlation([r["params"] for r in conv], [r["test_mse"] for r in conv])
    corr = {"x": "log latent_size", "y": "log test_mse", **corr, "params": {"x": "log params", **corr_p}}
    runs.write_json(out / CORRELATION, corr)
    log(correlation_sentence(corr, "log latent size", "log test MSE") + "\n"
        + correlation_sentence(corr_p, "log parameter count", "log test MSE"))
    write_plots(rows, pca, out)
    write_markdown(study, rows, pca, corr, out)
    log(f"wrote {out / RESULTS_CSV}, {out / RESULTS_MD}, {out / CORRELATION}, mse_vs_latent.png, mse_vs_params.png")
    return rows


def _cell(x: Any) -> Any:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.6g}"
    return x


# ----------------------------------------------------------------------------- plots
PLOTS = (("latent_size", "mse_vs_latent.png", "latent size (values per image)"),
         ("params", "mse_vs_params.png", "parameters"))


def write_plots(rows: list[dict], pca: dict[int, dict], out: Path) -> None:
    """mse_vs_latent.png (log-log, labelled points, the PCA line) and mse_vs_params.png."""
    from cae.core.plots import save_figure

    for x_key, fname, xlabel in PLOTS:
        save_figure(study_figure(rows, pca, x_key, xlabel), out / fname, dpi=120)


def study_figure(rows: list[dict], pca: dict[int, dict], x_key: str, xlabel: str):  # noqa: ANN201 - a Figure
    """Test MSE against `x_key` (log-log), one colour per axis of the study, every point named.

    Many variants share a latent size (the reference's 1,024), so their names are spread apart
    by `label_points` and the legend stands outside the axes, where no name can fall on it."""
    from cae.core.plots import figure, label_points, palette

    conv = [r for r in rows if r["kind"] == "conv"]
    axes_names = sorted({r["axis"] or "-" for r in conv})
    colours = {a: palette("tab10")(i % 10) for i, a in enumerate(axes_names)}
    fig = figure(figsize=(9, 6))
    ax = fig.subplots()
    for a in axes_names:
        pts = [r for r in conv if (r["axis"] or "-") == a]
        ax.scatter([r[x_key] for r in pts], [r["test_mse"] for r in pts], color=colours[a], label=a, zorder=3)
    if x_key == "latent_size":
        line = sorted((k, p["mse"]) for k, p in pca.items() if p["mse"] and p["mse"] > 0)
        ax.plot([k for k, _ in line], [m for _, m in line], "k--", lw=1, label="PCA (same latent size)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test MSE (pixels in [0, 1])")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, title="axis", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.subplots_adjust(left=0.09, right=0.8, top=0.95, bottom=0.09)
    label_points(ax, [r[x_key] for r in conv], [r["test_mse"] for r in conv], [r["name"] for r in conv])
    return fig


# ----------------------------------------------------------------------------- the conclusion's words
# Every word that compares (stronger, lower, about half, better than PCA) is chosen here from the
# numbers; the thresholds below define the words, they are not results.
STRENGTH_WORDS = ((0.7, "strong"), (0.4, "moderate"), (0.1, "weak"))  # |r| at least this, else negligible
SAME_WITHIN = 1.05  # ratios within 5% of 1 read "about the same as"
NAMED_WITHIN = 1.1  # ratios within 10% of 1/3, 1/2, 2, 3 read "about a third of", "about half", ...
NAMED_RATIOS = ((1 / 3, "about a third of"), (0.5, "about half"), (2.0, "about twice"), (3.0, "about three times"))
SMALL_LATENT = 256  # "small codes": does a conv variant beat PCA at a latent size at most this?
LATENT_CAP = 1024  # "the best variant with latent size at most this"


def strength(r: float) -> str:
    """A correlation's strength in words: |r| >= 0.7 strong, 0.4 moderate, 0.1 weak, else negligible."""
    for limit, word in STRENGTH_WORDS:
        if abs(r) >= limit:
            return word
    return "negligible"


def ratio_words(q: float) -> str:
    """A ratio of two errors as the words before "the other's": 'about half', '23% lower than',
    'about the same as', '3.4 times' (so 'its MSE is about half the reference's')."""
    if abs(math.log(q)) < math.log(SAME_WITHIN):
        return "about the same as"
    for target, words in NAMED_RATIOS:
        if abs(math.log(q / target)) < math.log(NAMED_WITHIN):
            return words
    if q < 1:
        return f"{100 * (1 - q):.0f}% lower than"
    return f"{100 * (q - 1):.0f}% higher than" if q < 2 else f"{q:.1f} times"


def share_words(k: int, n: int) -> str:
    """k of n in a word: none, all, most (more than half), some."""
    if k == 0:
        return "none"
    if k == n:
        return "all"
    return "most" if 2 * k > n else "some"


def correlation_sentence(c: dict[str, Any], x: str = "latent size", y: str = "test MSE",
                         alpha: float = 0.05) -> str:
    """The write-up of one correlation (a `correlation` dict): its strength, sign, trend and
    significance, and whether the rank correlation agrees, every word chosen by the numbers.

    `x` and `y` starting with "log " say that logarithms were correlated (as the study does).
    """
    n, r = c.get("n"), c.get("pearson_r")
    scale = ""
    if x.startswith("log ") and y.startswith("log "):
        x, y, scale = x[4:], y[4:], "on log scales "
    if r is None:
        return (f"No correlation between {x} and {y} was computed over these {n} variants (it needs at least "
                "3 variants whose values differ).")
    if not math.isfinite(r):
        return f"The correlation between {x} and {y} is undefined over these {n} variants (a constant column)."
    p, rho, q = c["pearson_p"], c["spearman_r"], c["spearman_p"]
    sign = "negative" if r < 0 else "positive"
    text = (f"Over {n} variants, {x} and {y} have a {strength(r)} {sign} linear correlation {scale}"
            f"(Pearson r = {r:.3f}): {_trend(r, x, y)}. It is {_significance(p, alpha)}. ")
    rank = "significant" if q < alpha else "not significant"
    text += (f"The rank correlation agrees in sign (Spearman ρ = {rho:.3f}, p = {q:.3g}, {rank})."
             if (rho < 0) == (r < 0) else
             f"The rank correlation has the opposite sign (Spearman ρ = {rho:.3f}, p = {q:.3g}, {rank}), "
             "so the relation is not monotonic.")
    if n < 8:
        text += f" With only {n} points the p-values are rough."
    return text


def _trend(r: float, x: str, y: str) -> str:
    if strength(r) == "negligible":
        return f"{x} says little about {y}"
    return f"larger {x} goes with {'lower' if r < 0 else 'higher'} {y}"


def _significance(p: float, alpha: float) -> str:
    verdict = "significant" if p < alpha else "not significant"
    return f"{verdict} at the {alpha:.0%} level (p = {p:.3g})"


def _still_learning(out: Path, names: list[str]) -> tuple[int, float]:
    """How many runs had their best validation at the last epoch, and the median last-epoch drop (%)."""
    last_best, drops = 0, []
    for name in names:
        path = out / name / runs.METRICS
        if not path.is_file():
            continue
        rows = runs.read_metrics_csv(path)
        vals = [r["val_mse"] for r in rows]
        last_best += int(vals[-1] <= min(vals))
        if len(vals) >= 2:
            drops.append(100 * (vals[-2] - vals[-1]) / vals[-2])
    return last_best, float(np.median(drops)) if drops else float("nan")


def conclusion(rows: list[dict], corr: dict, out: Path) -> str:
    """The conclusions as a Markdown list, one finding a statement with the number behind it;
    every number and every comparative word comes from `rows`, `corr` and the runs' metrics.csv
    files under `out`."""
    conv = [r for r in rows if r["kind"] == "conv"]
    ref = reference_row(conv)
    found = [("Latent size and error", correlation_sentence(corr, "log latent size", "log test MSE"))]
    if isinstance(corr.get("params"), dict):
        found.append(("Parameters and error",
                      correlation_sentence(corr["params"], "log parameter count", "log test MSE")))
    found += [("What changes the error most", _axis_effects(conv, ref)), ("Against PCA", _pca_comparison(conv)),
              ("Small codes", _small_codes(conv)), (f"Best at latent size <= {LATENT_CAP}", _best_small(conv, ref)),
              ("What limits the conv variants", _limits(conv, corr, ref, out))]
    return "\n".join(f"- **{title}.** {text}" for title, text in found if text)


def reference_row(conv: list[dict]) -> dict | None:
    """The row the other variants are compared with: axis or name 'reference'."""
    return next((r for r in conv if r["axis"] == "reference" or r["name"] == "reference"), None)


def _axis_effects(conv: list[dict], ref: dict | None) -> str:
    """The largest single change against the reference, then the axes ranked by their largest
    effect on test MSE (a nested list, one axis a line)."""
    if ref is None:
        return ""
    effects = []
    for axis in sorted({r["axis"] for r in conv} - {"reference", ""}):
        ratios = sorted((r["test_mse"] / ref["test_mse"], r["name"]) for r in conv if r["axis"] == axis)
        effects.append((max(abs(math.log(q)) for q, _ in ratios), axis, ratios))
    if not effects:
        return ""
    effects.sort(reverse=True)
    _, top_axis, top_ratios = effects[0]
    q, name = max(top_ratios, key=lambda qn: abs(math.log(qn[0])))
    ranked = "".join(f"\n    - {axis}: {', '.join(f'{n} x{q:.2f}' for q, n in ratios)}" for _, axis, ratios in effects)
    return (f"The largest single change is {name} ({top_axis}), whose test MSE is {ratio_words(q)} the "
            f"reference's ({ref['test_mse']:.5f}). Each axis's test MSE over the reference's, the axis with "
            f"the largest effect first:{ranked}")


def _pca_comparison(conv: list[dict]) -> str:
    """The CAE/PCA ratios: their range, and how many variants are better than PCA."""
    with_pca = [r for r in conv if r["ratio_to_pca"] is not None]
    if not with_pca:
        return ""
    best = min(with_pca, key=lambda r: r["ratio_to_pca"])
    worst = max(with_pca, key=lambda r: r["ratio_to_pca"])
    better = [r for r in with_pca if r["ratio_to_pca"] < 1]
    median = float(np.median([r["ratio_to_pca"] for r in with_pca]))
    text = (f"CAE/PCA test-MSE ratios range from {best['ratio_to_pca']:.2f} ({best['name']}) to "
            f"{worst['ratio_to_pca']:.2f} ({worst['name']}), median {median:.2f}: ")
    if len(better) == len(with_pca):
        text += f"all {len(with_pca)} variants are better than PCA at their own latent size"
    elif better:
        text += (f"{len(better)} of {len(with_pca)} variants are better than PCA at their own latent size "
                 f"({', '.join(r['name'] for r in better)}), the other {len(with_pca) - len(better)} no better")
    else:
        text += (f"no variant is better than PCA at its own latent size; even the best, {best['name']}, "
                 f"has a test MSE {ratio_words(best['ratio_to_pca'])} PCA's")
    return text + "."


def _small_codes(conv: list[dict]) -> str:
    """Whether a conv variant beats PCA at a small latent size (at most SMALL_LATENT)."""
    small = [r for r in conv if r["ratio_to_pca"] is not None and r["latent_size"] <= SMALL_LATENT]
    if not small:
        return ""
    sb = min(small, key=lambda r: r["ratio_to_pca"])
    verdict = "A conv variant beats" if sb["ratio_to_pca"] < 1 else "No conv variant beats"
    return (f"{verdict} PCA at a latent size of {SMALL_LATENT} or less; the best CAE/PCA ratio there is "
            f"{sb['ratio_to_pca']:.2f} ({sb['name']}, latent {sb['latent_size']}).")


def _best_small(conv: list[dict], ref: dict | None) -> str:
    """The best variant with a latent size of at most LATENT_CAP, against the reference."""
    capped = [r for r in conv if r["latent_size"] <= LATENT_CAP]
    if not capped:
        return ""
    b = min(capped, key=lambda r: r["test_mse"])
    text = (f"The best variant with latent size <= {LATENT_CAP} is {b['name']} (latent {b['latent_shape']}, "
            f"{b['params']:,} parameters) at test MSE {b['test_mse']:.5f}, PSNR {b['psnr']:.2f} dB")
    if ref is not None and b is not ref:
        text += f", {ratio_words(b['test_mse'] / ref['test_mse'])} the reference's test MSE"
    return text + "."


def _limits(conv: list[dict], corr: dict, ref: dict | None, out: Path) -> str:
    """What limits the conv variants: training length, capacity, code use, receptive field (a
    nested list, one limit a line)."""
    limits = [_training_length(conv, out), _capacity(corr.get("params", {})), _code_use(conv),
              _receptive_field(conv, ref)]
    return "".join(f"\n    - {text}." for text in limits if text)


def _training_length(conv: list[dict], out: Path) -> str:
    n_last, drop = _still_learning(out, [r["name"] for r in conv])
    if not conv or not math.isfinite(drop):
        return ""
    verdict = "so those were still learning" if n_last else "so none was still improving when it stopped"
    return (f"training length: {n_last} of {len(conv)} runs ({share_words(n_last, len(conv))}) had their best "
            f"validation MSE at the last epoch (median drop over the final epoch {drop:.1f}%), {verdict}")


def _capacity(cp: dict) -> str:
    rho = cp.get("spearman_r")
    if rho is None:
        return ""
    trend = ("the parameter count says little about the error" if strength(rho) == "negligible" else
             f"{'more' if rho < 0 else 'fewer'} parameters go with lower error")
    return f"capacity: {trend} (Spearman ρ {rho:+.2f}, {strength(rho)})"


def _code_use(conv: list[dict]) -> str:
    with_pca = [r for r in conv if r["ratio_to_pca"] is not None]
    gap = correlation([r["latent_size"] for r in with_pca], [r["ratio_to_pca"] for r in with_pca])
    if gap["spearman_r"] is None:
        return ""
    rho = gap["spearman_r"]
    said = f"(Spearman ρ {rho:+.2f}, {strength(rho)})"
    if strength(rho) == "negligible":
        return f"code use: the CAE/PCA ratio hardly follows the latent size {said}"
    grows = rho > 0
    return (f"code use: the CAE/PCA ratio {'grows' if grows else 'shrinks'} with the latent size {said}"
            + (", so the linear code gains more from extra dimensions than the conv stacks do" if grows
               else ", so the conv stacks gain more from extra dimensions than the linear code does"))


def _receptive_field(conv: list[dict], ref: dict | None) -> str:
    kern = sorted((r["test_mse"], r["name"]) for r in conv if r["axis"] == "kernel")
    if ref is None or not kern:
        return ""
    (best, best_name), (worst, worst_name) = kern[0], kern[-1]
    return (f"receptive field: the best kernel variant ({best_name}) reaches {ratio_words(best / ref['test_mse'])} "
            f"the reference's MSE (x{best / ref['test_mse']:.2f}), the worst ({worst_name}) "
            f"{ratio_words(worst / ref['test_mse'])} it (x{worst / ref['test_mse']:.2f})")


# ----------------------------------------------------------------------------- results.md
def _f(x: Any, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def write_markdown(study: Study, rows: list[dict], pca: dict[int, dict], corr: dict, out: Path) -> None:
    """results.md: the table, the PCA figures and the generated conclusion."""
    head = ("| name | axis | latent | compression | params | MACs | epochs | train s | val MSE | test MSE | "
            "PSNR dB | SSIM | PCA MSE | CAE/PCA |")
    lines = [f"# Architecture study: {study.title}", "", head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        lines.append("| " + " | ".join([
            r["name"], r["axis"], r["latent_shape"] + (f" = {r['latent_size']}" if r["kind"] == "conv" else ""),
            _f(r["compression"], ".1f"), _f(r.get("params"), ","), _f(r.get("macs"), ","), _f(r.get("epochs"), "d"),
            _f(r.get("train_seconds"), ".0f"), _f(r.get("val_mse"), ".5f"), _f(r["test_mse"], ".5f"),
            _f(r["psnr"], ".2f"), _f(r["ssim"], ".4f"), _f(r["pca_mse"], ".5f"), _f(r["ratio_to_pca"], ".2f")]) + " |")
    lines += ["", "Architectures:", ""]
    lines += [f"- **{r['name']}**: `{r['arch']}`" + (f" - {r['note']}" if r["note"] else "")
              for r in rows if r["kind"] == "conv"]
    lines += ["", "PCA baseline (fitted on the training split, test split): " + ", ".join(
        f"PCA-{k} {p['mse']:.5f}" for k, p in sorted(pca.items()) if p["mse"] is not None) + ".", "",
        "## Conclusion", "", conclusion(rows, corr, out), ""]
    runs.atomic_write_text(out / RESULTS_MD, "\n".join(lines))


def load_study_results(out: str | Path) -> list[dict]:
    """The rows of OUT/results.csv with numbers as int/float (empty cells as None)."""
    path = Path(out) / RESULTS_CSV
    if not path.is_file():
        raise CaeError(f"{path} not found; run `cae sweep STUDY.toml --out {out}` first")
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if k in TEXT_COLUMNS or k is None:
                    row[k] = v
                elif v in ("", None):
                    row[k] = None
                else:
                    try:
                        row[k] = int(v) if k in INT_COLUMNS else float(v)
                    except ValueError:
                        raise CaeError(f"{path} is corrupt ({k} = {v!r}); rerun the sweep to rewrite it") from None
            rows.append(row)
    return rows
