"""What a colorizer's decoding strength trades: test MSE against colorfulness.

A colorizer's decoding strength (`cae.core.decoding`: a classifier's boost or temperature, a
regression head's chroma gain) buys colour with MSE. `run_tradeoff` measures that curve for
one or more trained colorizers on their own test split: the network runs once per batch and only
the decoding repeats, over the strength's grid plus the strength the run decodes with. It writes
the curves to tradeoff.csv and plots them into tradeoff.png, each run's own strength starred
(`cae tradeoff`; docs/colorization.md's trade-off plot is made this way). The colorization study
draws the best run's curve on its test images with `model_curve` and `write_tradeoff`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cae.core.data import Cifar10
from cae.core.decoding import DECODING_GRIDS, decoding_curve, decoding_param
from cae.core.runs import shipped_run, write_csv
from cae.core.text import Log
from cae.errors import CaeError

TRADEOFF_CSV, TRADEOFF_PNG = "tradeoff.csv", "tradeoff.png"
FIELDS = ("run", "param", "value", "chosen", "mse", "colorfulness_pct")
SHIPPED = "colorizer"


def parse_target(text: str) -> tuple[str, Path, str | None]:
    """'[LABEL=]RUN[:PARAM]' (PARAM a key of DECODING_GRIDS) as (label, run folder, param or None);
    the label defaults to RUN, and the run 'shipped' is the shipped colorizer."""
    label, sep, rest = text.partition("=")
    if not sep or Path(text).exists():  # no label (a folder may have '=' or ':' in its name)
        label, rest = "", text
    run, sep, param = rest.rpartition(":")
    if sep and param not in DECODING_GRIDS and not Path(rest).exists():
        raise CaeError(f"{text}: {param!r} is not a decoding strength; "
                       f"give RUN:{' or RUN:'.join(DECODING_GRIDS)}, or RUN alone")
    if not sep or param not in DECODING_GRIDS:
        run, param = rest, None
    if run == "shipped":
        return label or "shipped colorizer", shipped_run(SHIPPED), param
    return label or run, Path(run), param


def tradeoff_curve(run_dir: str | Path, param: str | None = None, data: Cifar10 | None = None,
                   device: str = "auto", split: str = "test", name: str | None = None) -> list[dict]:
    """`model_curve` of a run folder's model on one part of its split ("test" or "val"); `param`
    defaults to the one the run calibrates. `name`: the run in error messages (its folder by
    default)."""
    from cae.core.device import keep_freed_memory
    from cae.core.train import load_run, run_images

    run_dir = Path(run_dir)
    model, cfg, task = load_run(run_dir, device)
    dev = next(model.parameters()).device
    if dev.type == "cpu":
        keep_freed_memory()  # a batch's logits, decoded at each strength, are tens of MB: reused, not page-faulted
    param = param or decoding_param(task, cfg.color)[0]  # the one its calibration sets
    _check_decodable(model, task, param, name or str(run_dir))
    return model_curve(model, run_images(run_dir, cfg, data, split).to(dev), task, param)


def model_curve(model, images_u8: torch.Tensor, task, param: str) -> list[dict]:  # noqa: ANN001
    """A colorizer's MSE and colorfulness (% of the truth's) on `images_u8` at each strength of
    `param`'s grid and at the one the model decodes with (`chosen` True: its calibrated strength,
    or the default), in the grid's order."""
    chosen = round(getattr(model, param).item(), 6)
    grid = tuple(sorted({*DECODING_GRIDS[param], chosen}, reverse=param == "temperature"))
    curve = decoding_curve(model, images_u8, task, param, grid)
    return [{"param": param, "value": r[param], "chosen": r[param] == chosen,
             "mse": r["mse"], "colorfulness_pct": 100 * r["colorfulness"] / r["colorfulness_truth"]}
            for r in curve]


def _check_decodable(model, task, param: str, run: str) -> None:  # noqa: ANN001
    if not hasattr(model, "raw"):
        raise CaeError(f"{run} is not a colorizer with a decoding strength (its net is {type(model).__name__}); "
                       "give a U-Net colorizer run, such as one trained with --config colorize-best")
    valid = ("boost", "temperature") if task.bins else ("chroma_gain",)
    if param not in valid:
        raise CaeError(f"{run}: a {'classifier' if task.bins else 'regression'} colorizer has no {param}; "
                       f"give RUN:{' or RUN:'.join(valid)}")
    if param == "boost" and not model.log_weights.any():
        raise CaeError(f"{run}: boost changes nothing in a run trained without decoding-time rebalancing "
                       "(color.decode_rebalance = 0); give RUN:temperature")


def run_tradeoff(targets: list[str], out: str | Path, data: Cifar10 | None = None, device: str = "auto",
                 split: str = "test", log: Log = print) -> list[dict]:
    """`tradeoff_curve` of each 'RUN[:PARAM]' target (`parse_target`), written to out/tradeoff.csv
    and plotted into out/tradeoff.png; the rows."""
    out = Path(out)
    rows = []
    for text in targets:
        label, run_dir, param = parse_target(text)
        curve = tradeoff_curve(run_dir, param, data, device, split, name=label)
        rows += [{"run": label, **r} for r in curve]
        star = next(r for r in curve if r["chosen"])
        log(f"{label}: {star['param']} {star['value']:g} (its own): {split} mse {star['mse']:.5f}, "
            f"colorfulness {star['colorfulness_pct']:.0f}% of the truth's")
    write_tradeoff(rows, out, split)
    log(f"-> {out / TRADEOFF_CSV}, {out / TRADEOFF_PNG}")
    return rows


def write_tradeoff(rows: list[dict], out: Path, split: str = "test") -> None:
    """Curves (rows with a `run` label) into out/tradeoff.csv and out/tradeoff.png."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / TRADEOFF_CSV, [{**r, "mse": f"{r['mse']:.6g}", "colorfulness_pct": f"{r['colorfulness_pct']:.2f}"}
                                   for r in rows], FIELDS)
    write_tradeoff_plot(rows, out / TRADEOFF_PNG, split)


def write_tradeoff_plot(rows: list[dict], path: Path, split: str = "test") -> None:
    """Colorfulness against MSE, one line per (run, param), the strengths labelled (every other one
    on a long curve), the one the run decodes with starred."""
    from cae.core.plots import figure, save_figure

    fig = figure(figsize=(7, 4.8))
    ax = fig.subplots()
    for run, param in dict.fromkeys((r["run"], r["param"]) for r in rows):
        curve = [r for r in rows if (r["run"], r["param"]) == (run, param)]
        line, = ax.plot([r["mse"] for r in curve], [r["colorfulness_pct"] for r in curve], "o-", ms=3,
                        label=f"{run} (over {param})")
        for i, r in enumerate(curve):
            if len(curve) <= 10 or i % 2 == 0 or r["chosen"]:
                ax.annotate(f"{r['value']:g}", (r["mse"], r["colorfulness_pct"]), fontsize=6,
                            textcoords="offset points", xytext=(4, -3))
        star = next(r for r in curve if r["chosen"])
        ax.plot(star["mse"], star["colorfulness_pct"], "*", ms=13, color=line.get_color(), markeredgecolor="k")
    ax.set_xlabel(f"{split} MSE (RGB, [0, 1])")
    ax.set_ylabel("colorfulness, % of the truth's")
    ax.set_title("Colour bought with MSE over the decoding strength (star: the run's own)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)
