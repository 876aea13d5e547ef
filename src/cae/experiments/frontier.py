"""The frontier study: where does a nonlinear autoencoder beat the best linear code (PCA)?

A frontier study is a study file with `analysis = "frontier"` (cae/studies/frontier.toml): CAEs
of growing capacity at each latent size, trained like any study. Its rows (one per trained run,
from `cae.experiments.study.write_results`) and the PCA figures at the same sizes become:

- models: the runs grouped by architecture and epochs; runs that differ only in their seed are
  one model, reported as mean and standard deviation;
- the frontier: the best model per latent size, in MSE (and separately in SSIM);
- OUT/frontier.csv (one row per latent size), OUT/frontier.json (models, frontier, the answer),
  OUT/frontier_mse.png and OUT/frontier_ssim.png, and OUT/results.md with the written answer.

Everything here reads plain rows and dicts: it trains nothing and knows no study file.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from cae.core import runs
from cae.core.text import Log, number

WINNER_MAX_LATENT = 256  # the CAE that beats PCA by most at a latent size up to this ...
WINNER_SEEDS = 3  # ... is trained with this many seeds in all (cae.experiments.sweep.run_sweep)
MAX_EXTRAPOLATION = 10  # doublings of the parameters: beyond this "at that rate" is no forecast
FRONTIER_CSV = "frontier.csv"
FRONTIER_JSON = "frontier.json"
RESULTS_MD = "results.md"
CSV_COLUMNS = ("latent_size", "pca_mse", "best_mse_name", "best_mse", "best_mse_std", "seeds", "ratio_to_pca",
               "params", "train_seconds", "pca_ssim", "best_ssim_name", "best_ssim", "ssim_ratio_to_pca")
JPEG_CAVEAT = ("The data are a JPEG-derived copy of CIFAR-10. JPEG removes the high-frequency tail that PCA's last "
               "components would encode, so on this copy PCA's error at large sizes is lower than on the "
               "original images: the comparison flatters PCA.")


def group_models(rows: list[dict]) -> list[dict]:
    """The trained runs (`kind` conv) grouped into models: same arch and epochs, any seed.

    Each model has the first run's name, axis, arch, latent size, parameters and epochs, the
    number of `seeds`, `mse`/`ssim` as means and `mse_std`/`ssim_std` (0 for one seed), and the
    mean training time; `unstable` names its runs whose training blew up (their rows'
    `unstable_epoch`, from `cae.core.stability.find_instability`)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["kind"] == "conv":
            groups.setdefault((r["arch"], r["epochs"]), []).append(r)
    models = []
    for runs_ in groups.values():
        first = runs_[0]
        mse = [r["test_mse"] for r in runs_]
        ssim = [r["ssim"] for r in runs_]
        models.append({"name": first["name"], "axis": first["axis"], "arch": first["arch"],
                       "latent_size": first["latent_size"], "params": first["params"], "epochs": first["epochs"],
                       "seeds": len(runs_), "mse": statistics.fmean(mse), "ssim": statistics.fmean(ssim),
                       "mse_std": statistics.stdev(mse) if len(mse) > 1 else 0.0,
                       "ssim_std": statistics.stdev(ssim) if len(ssim) > 1 else 0.0,
                       "unstable": [r["name"] for r in runs_ if r.get("unstable_epoch")],
                       "train_seconds": statistics.fmean(r["train_seconds"] or 0.0 for r in runs_)})
    return sorted(models, key=lambda m: (m["latent_size"], m["params"]))


def pca_at(pca: dict[int, dict], k: int) -> dict:
    """PCA's figures at latent size k (an image has 3,072 values: no more components beyond that)."""
    return pca[min(k, 3 * 32 * 32)]


def best_model(models: list[dict], pca: dict[int, dict]) -> str | None:
    """The model (seeds averaged) with the lowest MSE ratio to PCA below 1 at a latent size up
    to WINNER_MAX_LATENT: the run a sweep retrains with more seeds, and what
    the shipped config beats-pca is; None when none beats PCA."""
    def ratio(m: dict) -> float:
        p = pca_at(pca, m["latent_size"])["mse"]
        return m["mse"] / p if p else math.inf

    wins = [m for m in models if m["latent_size"] <= WINNER_MAX_LATENT and ratio(m) < 1]
    return min(wins, key=ratio)["name"] if wins else None


def frontier(models: list[dict], pca: dict[int, dict]) -> list[dict]:
    """One row per latent size: PCA's MSE and SSIM there, the model with the lowest mean MSE and
    the one with the highest mean SSIM, and their ratios to PCA (MSE: below 1 beats PCA; SSIM:
    above 1 beats it)."""
    out = []
    for k in sorted({m["latent_size"] for m in models}):
        here = [m for m in models if m["latent_size"] == k]
        by_mse = min(here, key=lambda m: m["mse"])
        by_ssim = max(here, key=lambda m: m["ssim"])
        p = pca_at(pca, k)
        out.append({"latent_size": k, "pca_mse": p["mse"], "pca_ssim": p["ssim"],
                    "best_mse_name": by_mse["name"], "best_mse": by_mse["mse"], "best_mse_std": by_mse["mse_std"],
                    "seeds": by_mse["seeds"], "ratio_to_pca": by_mse["mse"] / p["mse"] if p["mse"] else None,
                    "params": by_mse["params"], "train_seconds": by_mse["train_seconds"],
                    "best_ssim_name": by_ssim["name"], "best_ssim": by_ssim["ssim"],
                    "ssim_ratio_to_pca": by_ssim["ssim"] / p["ssim"] if p["ssim"] else None})
    return out


def write_frontier(rows: list[dict], pca: dict[int, dict], out: Path, log: Log = print) -> dict[str, Any]:
    """frontier.csv, frontier.json, the two plots and results.md from the study's rows; returns
    the frontier.json content."""
    models = group_models(rows)
    front = frontier(models, pca)
    text = answer(models, front)
    runs.write_csv(out / FRONTIER_CSV, [{c: f"{r[c]:.6g}" if isinstance(r[c], float) else r[c] for c in CSV_COLUMNS}
                                        for r in front], CSV_COLUMNS)
    result = {"models": models, "frontier": front, "winner": best_model(models, pca), "answer": text,
              "caveat": JPEG_CAVEAT}
    runs.write_json(out / FRONTIER_JSON, result)
    write_plots(models, front, pca, out)
    runs.atomic_write_text(out / RESULTS_MD, markdown(models, front, text))
    log(text)
    log(f"wrote {out / FRONTIER_CSV}, {out / FRONTIER_JSON}, frontier_mse.png, frontier_ssim.png, {out / RESULTS_MD}")
    return result


# ----------------------------------------------------------------------------- the written answer
def answer(models: list[dict], front: list[dict]) -> str:
    """Where the CAE beats PCA, by how much, at what cost, and how the gap moves with capacity:
    every figure and every comparative word from the numbers."""
    parts = [_where(front), _gap_by_size(front), _capacity(models, front), _ssim(front), _unstable(models),
             JPEG_CAVEAT]
    return "\n\n".join(p for p in parts if p)


def _unstable(models: list[dict]) -> str:
    """The runs whose training became unstable (`cae.core.stability`): their points understate their models."""
    names = [name for m in models for name in m.get("unstable", [])]
    if not names:
        return ""
    runs_ = sum(m["seeds"] for m in models)
    return (f"{len(names)} of {runs_} runs became unstable (their error jumped well above its lowest, and "
            f"each was tested at its best epoch): {', '.join(names)}. Their figures understate "
            "what those models reach when they train stably; a lower peak learning rate usually avoids it.")


def _pct(ratio: float) -> str:
    return f"{abs(1 - ratio) * 100:.0f}%"


def _mse(r: dict) -> str:
    spread = f" ± {r['best_mse_std']:.5f} over {r['seeds']} seeds" if r["seeds"] > 1 else " (one seed)"
    return f"{r['best_mse']:.5f}{spread}"


def _where(front: list[dict]) -> str:
    wins = [r for r in front if r["ratio_to_pca"] is not None and r["ratio_to_pca"] < 1]
    if not wins:
        best = min((r for r in front if r["ratio_to_pca"]), key=lambda r: r["ratio_to_pca"])
        return (f"No CAE beats PCA in test MSE at any latent size studied. The closest is {best['best_mse_name']} "
                f"at latent {best['latent_size']}: {_mse(best)}, {best['ratio_to_pca']:.2f}x PCA-{best['latent_size']}'s "
                f"{best['pca_mse']:.5f}.")
    lines = [f"latent {r['latent_size']}: {r['best_mse_name']}, {_mse(r)} against PCA's {r['pca_mse']:.5f} "
             f"({_pct(r['ratio_to_pca'])} lower; {number(r['params'])} parameters, "
             f"{r['train_seconds'] / 60:.0f} min of training)" for r in wins]
    sizes = ", ".join(str(r["latent_size"]) for r in wins)
    cross = crossover(front)
    where = ""
    if cross:
        above = min(r["latent_size"] for r in front if r["latent_size"] > cross)
        below = max(r["latent_size"] for r in front if r["latent_size"] < cross)
        where = f" PCA overtakes it between latent {below} and {above}."
    return (f"A nonlinear CAE beats PCA in test MSE at latent size{'s' if len(wins) > 1 else ''} {sizes} of "
            f"{len(front)} studied:\n" + "\n".join(f"- {line}" for line in lines) + ("\n\n" + where.strip() if where else ""))


def _gap_by_size(front: list[dict]) -> str:
    pts = [r for r in front if r["ratio_to_pca"]]
    if len(pts) < 2:
        return ""
    ratios = ", ".join(f"{r['ratio_to_pca']:.2f} at {r['latent_size']}" for r in pts)
    rising = sum(b["ratio_to_pca"] > a["ratio_to_pca"] for a, b in zip(pts, pts[1:]))
    trend = ("grows with the latent size: the bigger the code, the further PCA pulls ahead"
             if rising == len(pts) - 1 else
             "falls as the latent size grows" if rising == 0 else
             f"rises at {rising} of {len(pts) - 1} steps up in latent size")
    return f"The best CAE's MSE over PCA's, by latent size: {ratios}. The ratio {trend}."


def _capacity(models: list[dict], front: list[dict]) -> str:
    """How the ratio to PCA moves from the smallest to the largest model at each size, and,
    where no model wins, how many more doublings of parameters the trend would need."""
    lines = []
    for r in front:
        here = [m for m in models if m["latent_size"] == r["latent_size"]]
        if len(here) < 2 or not r["pca_mse"]:
            continue
        small, big = here[0], max(here, key=lambda m: m["params"])
        a, b = small["mse"] / r["pca_mse"], big["mse"] / r["pca_mse"]
        line = (f"latent {r['latent_size']}: {a:.2f} with {number(small['params'])} parameters ({small['name']}) "
                f"-> {b:.2f} with {number(big['params'])} ({big['name']})")
        doublings = math.log2(big["params"] / small["params"])
        if b >= 1 and doublings > 0:
            per = math.log(a / b) / doublings  # log-ratio gained per doubling of parameters
            more = math.log(b) / per if per > 0 else math.inf
            line += (f"; at that rate, PCA is reached after about {more:.1f} more doublings of the parameters"
                     if more <= MAX_EXTRAPOLATION else "; growing the width does not close the gap at this rate")
        lines.append(line)
    if not lines:
        return ""
    return "How the ratio to PCA moves with capacity (smallest -> largest model at each size):\n" + "\n".join(
        f"- {line}" for line in lines)


def _ssim(front: list[dict]) -> str:
    wins = [r for r in front if r["ssim_ratio_to_pca"] and r["ssim_ratio_to_pca"] > 1]
    if not wins:
        return "In SSIM no CAE beats PCA at any latent size studied."
    return ("In SSIM a CAE beats PCA at latent size" + ("s " if len(wins) > 1 else " ") + ", ".join(
        f"{r['latent_size']} ({r['best_ssim']:.3f} against {r['pca_ssim']:.3f})" for r in wins) + ".")


def crossover(front: list[dict], key: str = "ratio_to_pca", lower_wins: bool = True) -> float | None:
    """Where the CAE stops beating PCA: the geometric mean of the largest size it wins at and
    the next size studied, when it wins at the smaller sizes and loses above (else None)."""
    won = [bool(r[key]) and (r[key] < 1 if lower_wins else r[key] > 1) for r in front]
    if not won or not won[0] or all(won):
        return None
    last = won.index(False) - 1
    return math.sqrt(front[last]["latent_size"] * front[last + 1]["latent_size"])


def markdown(models: list[dict], front: list[dict], text: str) -> str:
    """results.md: the frontier table, every model, and the answer."""
    lines = ["# Frontier study: CAE against PCA", "",
             "| latent | PCA MSE | best CAE | MSE | CAE/PCA | params | PCA SSIM | best CAE SSIM |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['latent_size']} | {r['pca_mse']:.5f} | {r['best_mse_name']} | {_mse(r)} | "
              f"{r['ratio_to_pca']:.3f} | {number(r['params'])} | {r['pca_ssim']:.3f} | {r['best_ssim']:.3f} |"
              for r in front]
    lines += ["", "| model | latent | capacity | params | epochs | seeds | test MSE | SSIM | train min |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {m['name']} | {m['latent_size']} | {m['axis']} | {number(m['params'])} | {m['epochs']} | "
              f"{m['seeds']} | {m['mse']:.5f} | {m['ssim']:.3f} | {m['train_seconds'] / 60:.1f} |" for m in models]
    lines += ["", "Architectures:", ""] + [f"- **{m['name']}**: `{m['arch']}`" for m in models]
    return "\n".join(lines + ["", "## Answer", "", text, ""])


# ----------------------------------------------------------------------------- plots
def write_plots(models: list[dict], front: list[dict], pca: dict[int, dict], out: Path) -> None:
    """frontier_mse.png and frontier_ssim.png: every model (colour = capacity), the frontier
    (best per size), the PCA line, and the sizes where the CAE wins marked."""
    from cae.core.plots import figure, palette, save_figure

    axes_names = list(dict.fromkeys(m["axis"] or "-" for m in sorted(models, key=lambda m: m["params"])))
    colours = {a: palette("tab10")(i % 10) for i, a in enumerate(axes_names)}
    pca_line = sorted((k, p) for k, p in pca.items() if p["mse"] and p["mse"] > 0 and k <= max(r["latent_size"] for r in front))
    for metric, best, key, ylabel in (("mse", "best_mse", "ratio_to_pca", "test MSE (pixels in [0, 1])"),
                                      ("ssim", "best_ssim", "ssim_ratio_to_pca", "test SSIM")):
        fig = figure(figsize=(8, 5.5))
        ax = fig.subplots()
        for a in axes_names:
            pts = [m for m in models if (m["axis"] or "-") == a]
            ax.scatter([m["latent_size"] for m in pts], [m[metric] for m in pts], color=colours[a], label=a, s=18,
                       zorder=3)
        ax.plot([r["latent_size"] for r in front], [r[best] for r in front], "-", color="tab:red", lw=1.5,
                label="CAE frontier (best per size)")
        ax.plot([k for k, _ in pca_line], [p[metric] for _, p in pca_line], "k--", lw=1, label="PCA (same size)")
        wins = [r for r in front if r[key] and (r[key] < 1 if metric == "mse" else r[key] > 1)]
        if wins:
            ax.scatter([r["latent_size"] for r in wins], [r[best] for r in wins], marker="*", s=160,
                       color="gold", edgecolor="k", zorder=4, label="CAE beats PCA")
        cross = crossover(front, key, metric == "mse")
        if cross:
            ax.axvline(cross, color="gray", ls=":", lw=1.2, label=f"crossover (~{cross:.0f})")
        ax.set_xscale("log", base=2)
        if metric == "mse":
            ax.set_yscale("log")
        ax.set_xlabel("latent size (values per image)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        save_figure(fig, out / f"frontier_{metric}.png", dpi=120)
