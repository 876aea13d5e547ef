"""The colorization study: baselines, the runs, the shipped colorizer, tables and a write-up.

`run_colorization_study(out)` trains (resumably; finished runs are skipped) into `out/`:
  rgb      the reference CAE, luma in, RGB out          (config colorize-rgb)
  chroma   the reference CAE, luma in, YCbCr chroma out
and evaluates the shipped colorizer (a U-Net classifier over chroma bins, its decoding
calibrated on the validation split; config `colorize-best`) on the same test split as
  best     (the shipped files copied and the test metrics measured here, not trained here:
           training it would add about two thirds to `cae reproduce` on two cores;
           `cae train --config colorize-best` trains it again, docs/colorization.md)
and writes baselines.json, results.csv, results.md, samples.png and shortcomings.md.
Baselines (no training): (a) the gray image itself, (b) the gray image with the training
split's mean chrominance.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch

from cae.core import runs
from cae.core.config import DataConfig, RunConfig, TrainConfig
from cae.core.data import Cifar10, load_cifar10, luma
from cae.core.decoding import DECODING_FILE, DECODING_LABELS, DEFAULT_DECODING, decoded_metrics
from cae.experiments.baselines import BASELINE_NAMES, baseline_predictions, compute_baselines, mean_chroma

Log = Callable[[str], None]
BASELINES = "baselines.json"
SHIPPED = "colorizer"  # the shipped weights evaluated as the study's `best`
SAMPLE_COUNT = 10


def study_runs() -> dict[str, RunConfig]:
    """The runs the study trains, by folder name (the shipped config colorize-rgb holds the first)."""
    def cfg(target: str) -> RunConfig:
        # the settings the colorization study was tuned and measured at (float32, batch 64,
        # peak lr 7e-3, no gradient clipping); pinned so its figures stay reproducible as the
        # package defaults move
        return RunConfig(task="colorize", target=target, arch="reference", data=DataConfig(),
                         train=TrainConfig(epochs=10, batch_size=64, lr=7e-3, clip=0.0, precision="fp32"))

    # a Lab-target run is left out: it costs as much as the others and ycbcr is exact to merge
    # (Lab is merged through the gray image's L*, see cae.core.color)
    return {"rgb": cfg("rgb"), "chroma": cfg("ycbcr")}


# ----------------------------------------------------------------------------- the study
def run_colorization_study(out: Path, *, epochs: int | None = None, limit: int = 0, data: Cifar10 | None = None,
                           data_dir: str | Path | None = None, photos: str | Path | None = "auto",
                           log: Log = print) -> dict:
    """Train the colorization runs into `out`, compute baselines, write tables, samples, shortcomings.

    `epochs` / `limit` override every run's (quick mode); finished runs are skipped, so a
    second call only redoes the (cheap) tables. `photos`: a folder of real photos the best run
    is also scored on (`cae.experiments.photos.evaluate_photos`, into out/photos/); 'auto' = the default
    folder when present, None = none. Returns {"runs", "baselines", "rows", "photos"}.
    """
    from cae import train_run

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else load_cifar10(data_dir)
    results: dict[str, dict] = {}
    for name, cfg in planned_runs(epochs=epochs, limit=limit, data_dir=data_dir).items():
        log(f"colorization: {name} ({cfg.arch}, target {cfg.target}, {cfg.train.epochs} epochs)")
        train_run(cfg, out / name, progress=False, data=data, log=log)
        results[name] = runs.read_json(out / name / runs.TEST_METRICS, ("mse",))

    split = runs.load_split(out / "chroma" / runs.SPLIT)  # the baselines and `best` use the runs' test images
    test = data.images[split["test"]]
    results["best"] = shipped_best(out / "best", test, log)
    baselines = compute_baselines(data.images[split["train"]], test)
    runs.write_json(out / BASELINES, baselines)
    rows = result_rows(results, baselines)
    _write_tables(out, rows)
    _write_samples(out, test[:SAMPLE_COUNT], list(results), baselines["b"])
    photo_res = _study_photos(out, photos, log)
    runs.atomic_write_text(out / "shortcomings.md", shortcomings(rows, results, baselines, out, photo_res))
    log(f"colorization: wrote {out / 'results.md'}, {out / 'samples.png'}, {out / 'shortcomings.md'}")
    return {"runs": results, "baselines": baselines, "rows": rows, "photos": photo_res}


def shipped_best(dest: Path, test_u8: torch.Tensor, log: Log = print) -> dict:
    """The shipped colorizer as the study's `best` run: its files copied into `dest`, its test
    metrics measured again on `test_u8` (the study's test images) at its calibrated decoding and
    at the default one, as a trained run records them, its samples figure and its trade-off
    curve over the decoding strength (tradeoff.csv, tradeoff.png). Done once."""
    from cae.core.device import keep_freed_memory
    from cae.core.plots import save_samples
    from cae.core.train import load_run
    from cae.experiments.tradeoff import model_curve, write_tradeoff

    if runs.is_finished(dest):
        return runs.read_json(dest / runs.TEST_METRICS, ("mse",))
    src = runs.shipped_run(SHIPPED)
    # test_metrics.json is written last, from this evaluation: it marks the run finished
    runs.copy_files(src, dest, [f for f in runs.SHIPPED_FILES if f != runs.TEST_METRICS])
    model, _, task = load_run(dest, "cpu")
    keep_freed_memory()  # the decoded batches' temporaries, reused instead of page-faulted in again
    param = runs.read_json(dest / DECODING_FILE, ("param",))["param"]
    values = (getattr(model, param).item(), DEFAULT_DECODING[param])
    chosen, default = decoded_metrics(model.eval(), test_u8, task, param, values)
    save_samples(model, test_u8[:10], task, dest / "samples.png")
    write_tradeoff([{"run": "shipped colorizer", **r} for r in model_curve(model, test_u8, task, param)], dest)
    metrics = {**runs.read_json(src / runs.TEST_METRICS), **chosen, "shipped": True,
               **{f"default_{k}": default[k] for k in ("mse", "psnr", "ssim", "chroma_mse", "colorfulness")}}
    runs.write_json(dest / runs.TEST_METRICS, metrics)
    log(f"colorization: best = the shipped colorizer ({metrics['arch']}), test mse {metrics['mse']:.5f}, "
        f"colorfulness {metrics['colorfulness'] / metrics['colorfulness_truth']:.0%} of the truth's -> {dest}")
    return metrics


def planned_runs(*, epochs: int | None = None, limit: int = 0, data_dir: str | Path | None = None) -> dict[str, RunConfig]:
    """`study_runs` as `run_colorization_study` trains them: with its `epochs`, `limit` and
    `data_dir` (so a caller that trains them beforehand, such as `cae reproduce`, trains the same)."""
    planned = study_runs()
    for cfg in planned.values():
        if epochs is not None:
            cfg.train.epochs = epochs
        cfg.data.limit = limit
        if data_dir is not None:
            cfg.data.dir = str(data_dir)
    return planned


def _study_photos(out: Path, photos: str | Path | None, log: Log) -> dict | None:
    """The best run scored on a folder of real photos (None when there is no folder)."""
    from cae.experiments.photos import default_photos_dir, evaluate_photos

    folder = default_photos_dir() if photos == "auto" else photos
    if not folder:
        return None
    return evaluate_photos(folder, out / "photos", model_dir=out / "best", log=log)


FIELDS = ("name", "target", "arch", "params", "latent_size", "mse", "psnr", "ssim", "chroma_mse", "colorfulness",
          "colorfulness_truth", "colorfulness_ratio", "beats_a", "beats_b")


def result_rows(results: dict[str, dict], baselines: dict[str, dict]) -> list[dict]:
    """One row per baseline and run (FIELDS), in table order."""
    rows = []
    for key, label in BASELINE_NAMES.items():
        rows.append(_row(label, "-", "-", 0, 0, baselines[key], baselines))
    for name, m in results.items():
        rows.append(_row(name, m.get("target", ""), m.get("arch", ""), m.get("params", 0), m.get("latent_size", 0),
                         m, baselines))
        param = next((k for k in DECODING_LABELS if k in m), None)
        if param:  # the same model at the default decoding (before calibration), for comparison
            label = DECODING_LABELS[param]
            before = {k: m[f"default_{k}"] for k in ("mse", "psnr", "ssim", "chroma_mse", "colorfulness")}
            before["colorfulness_truth"] = m["colorfulness_truth"]
            rows.append(_row(f"{name} ({label} {DEFAULT_DECODING[param]:g})", m["target"], m["arch"], m["params"], m["latent_size"], before,
                             baselines))
            rows[-2]["name"] = f"{name} ({label} {m[param]:.2f})"
    return rows


def _row(name: str, target: str, arch: str, params: int, latent: int, m: dict, baselines: dict) -> dict:
    ratio = m["colorfulness"] / m["colorfulness_truth"] if m["colorfulness_truth"] else math.nan
    is_baseline = name in BASELINE_NAMES.values()
    return {"name": name, "target": target, "arch": arch, "params": params, "latent_size": latent,
            "mse": m["mse"], "psnr": m["psnr"], "ssim": m["ssim"], "chroma_mse": m["chroma_mse"],
            "colorfulness": m["colorfulness"], "colorfulness_truth": m["colorfulness_truth"],
            "colorfulness_ratio": ratio,
            "beats_a": "-" if is_baseline else ("yes" if m["mse"] < baselines["a"]["mse"] else "no"),
            "beats_b": "-" if is_baseline else ("yes" if m["mse"] < baselines["b"]["mse"] else "no")}


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) >= 1 else f"{v:.5f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _write_tables(out: Path, rows: list[dict]) -> None:
    runs.write_csv(out / "results.csv", rows, FIELDS)
    head = ["name", "target", "arch", "params", "latent", "MSE", "PSNR dB", "SSIM", "chroma MSE", "colorfulness",
            "truth", "ratio", "beats (a)", "beats (b)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [_fmt(r[k]) for k in FIELDS]
        vals[11] = f"{r['colorfulness_ratio']:.0%}"
        vals[7] = f"{r['ssim']:.4f}"
        vals[6] = f"{r['psnr']:.2f}"
        lines.append("| " + " | ".join(vals) + " |")
    text = ("# Colorization results (test split)\n\nMSE, PSNR, SSIM on RGB in [0, 1]; chroma MSE on YCbCr Cb/Cr; "
            "colorfulness: Hasler & Suesstrunk (0-255 scale), ratio = prediction / ground truth.\n\n"
            + "\n".join(lines) + "\n")
    runs.atomic_write_text(out / "results.md", text)


def _write_samples(out: Path, images_u8: torch.Tensor, names: list[str], base_b: dict) -> None:
    """gray / baseline (b) / each model / truth for the same test images."""
    from cae.core.plots import save_grid
    from cae.core.train import load_run

    rgb = images_u8.float().div(255)
    m = torch.tensor([base_b["mean_cb"], base_b["mean_cr"]])
    rows, labels = [luma(rgb)], ["gray input"]
    rows.append(baseline_predictions(rgb, m)["b"].clamp(0, 1))
    labels.append("(b) mean chroma")
    for name in names:
        model, _, task = load_run(out / name, "cpu")
        with torch.inference_mode():
            rows.append(task.predict_rgb(model, rgb).clamp(0, 1))
        labels.append(name)
    rows.append(rgb)
    labels.append("ground truth")
    save_grid(rows, labels, out / "samples.png")


# ----------------------------------------------------------------------------- write-up
def _verdict(r: dict | None) -> str:
    """'MSE 0.00468, beating baseline (a) and (b)' for a results row (or 'not run')."""
    if r is None:
        return "not run"
    beats = [x for x, k in (("(a)", "beats_a"), ("(b)", "beats_b")) if r[k] == "yes"]
    fails = [x for x, k in (("(a)", "beats_a"), ("(b)", "beats_b")) if r[k] == "no"]
    s = f"MSE {r['mse']:.5f}"
    if beats:
        s += f", beating baseline {' and '.join(beats)}"
    if fails:
        s += f"{' but' if beats else ','} NOT beating baseline {' or '.join(fails)}"
    return s


def shortcomings(rows: list[dict], results: dict[str, dict], baselines: dict, out: Path,
                 photos: dict | None = None) -> str:
    """The shortcomings paragraphs, generated from the measured figures (and `evaluate_photos`'s)."""
    by = {r["name"]: r for r in rows}
    a, b = baselines["a"], baselines["b"]
    # a calibrated run has two rows: at its chosen decoding, then at the default one
    at = next((i for i, r in enumerate(rows) if r["name"].startswith("best (")), None)
    best_row = rows[at] if at is not None else by.get("best")
    before = rows[at + 1] if at is not None else None
    rgb, chrom, lab = by.get("rgb"), by.get("chroma"), by.get("lab")
    p = ["# Shortcomings of the colorizers\n",
         f"Figures are test-split figures from `results.md`. Baselines: (a) the gray image, MSE {a['mse']:.5f}; "
         f"(b) the gray image with the training split's mean chrominance, MSE {b['mse']:.5f}.\n"]
    if rgb and chrom:
        p.append(_rgb_text(rgb, chrom, lab))
    if best_row is not None:
        p.append(_desaturation_text(rows, results.get("best", {}), best_row, before, out / "best"))
    if best_row is not None and chrom:
        p.append(_ambiguity_text(best_row, b))
        p.append(_receptive_field_text(chrom, best_row, before, results))
    p.append(_photos_text(photos))
    return "\n".join(p)


def _findings(title: str, *statements: str) -> str:
    """One shortcoming: its title, then a list of short statements, one finding each."""
    return f"**{title}**\n\n" + "".join(f"- {x.strip()}\n" for x in statements if x.strip())


def _rgb_text(rgb: dict, chrom: dict, lab: dict | None) -> str:
    return _findings(
        "Why the RGB-output reference loses.",
        f"Asked to output RGB, the reference CAE ({rgb['params']:,} parameters) reaches {_verdict(rgb)}.",
        f"Its {rgb['latent_size']:,}-value bottleneck must carry the luminance as well as the colour, and the "
        "luminance is most of the signal: the decoder has to rebuild every edge of the gray image from the code"
        + (", and the error it makes on the luminance alone exceeds what colour could gain over the gray "
           "image." if rgb["beats_a"] == "no" else ", which costs more than the colour gains."),
        "In chroma mode the network predicts only Cb/Cr and the given luma is merged back exactly, so "
        f"nothing of the luminance is lost: the same net reaches {_verdict(chrom)} (YCbCr target)"
        + (f" and {_verdict(lab)} (Lab target)" if lab else "") + ".")


def _ambiguity_text(best: dict, mean_chroma: dict) -> str:
    share = best["chroma_mse"] / mean_chroma["chroma_mse"]
    return _findings(
        "Colour is ambiguous given luminance.",
        "A car, a shirt or a bird of the same gray can be any colour; no loss on a single target can recover it.",
        f"The best model's chroma MSE ({best['chroma_mse']:.5f}) is {share:.0%} of the mean-chroma baseline's "
        f"({mean_chroma['chroma_mse']:.5f}): it explains {1 - share:.0%} of the colour variance the mean colour "
        "leaves, "
        + ("less than half: what the net learns are the frequent, predictable colours (sky, vegetation, "
           "water), as samples.png shows." if share > 0.5 else
           "the rest is the ambiguity itself and what the net cannot see."))


def _receptive_field_text(chrom: dict, best: dict, before: dict | None, results: dict) -> str:
    from cae.core.model import receptive_field

    field = receptive_field(chrom["arch"], 1, 2)
    return _findings(
        "Small receptive field of the chain CAE.",
        f"Each output pixel of the reference CAE depends on at most {field}x{field} input pixels (measured on its "
        "layers; the effective field is much smaller): too little to tell what an object is, which is what "
        f"decides its colour; it reaches {_verdict(chrom)} in chroma mode.",
        f"Tried against it: the U-Net ({best['arch']}, {best['params']:,} parameters) whose bottleneck at 1/8 of "
        "the side sees the whole 32x32 image, with skip connections that keep edges sharp, trained "
        f"{results['best'].get('epochs', '?')} epochs: {_verdict(best)} (colorfulness "
        f"{best['colorfulness_ratio']:.0%} of the truth's)"
        + (f"; {before['mse']:.5f} at the default decoding" if before else "") + ".")


def _desaturation_text(rows: list[dict], m: dict, best: dict, before: dict | None, run: Path) -> str:
    """Why MSE desaturates, and what the best run's decoding bought (its calibration's figures)."""
    from cae.core.config import load_config

    c = load_config(run / runs.CONFIG).color if (run / runs.CONFIG).is_file() else None
    ratios = ", ".join(f"{r['name']} {r['colorfulness_ratio']:.0%}" for r in rows)
    said = [("Trained with MSE, a colorizer predicts the conditional mean colour of what it sees; where a region "
             "could be red or blue it predicts the grayish average. Colorfulness (prediction / ground truth): "
             f"{ratios}.")]
    if c is not None and c.decoder == "classes":
        said += _decoder_statements(c, m)
    param = next((k for k in DECODING_LABELS if k in m), None)
    if param and before is not None and c is not None:
        said.append(f"{DECODING_LABELS[param].capitalize()} {m[param]:.2f} was chosen on the validation split "
                    f"(the least vivid restoring {c.colorfulness_target:.0%} of the truth's colorfulness within "
                    f"{c.mse_tolerance:.0%} extra MSE, else the most vivid within it): colorfulness "
                    f"{before['colorfulness_ratio']:.0%} -> {best['colorfulness_ratio']:.0%} at test MSE "
                    f"{before['mse']:.5f} -> {best['mse']:.5f}.")
    elif param and before is not None:
        said.append(f"A chroma gain of {m[param]:.2f} (chosen on the validation split) gives colorfulness "
                    f"{before['colorfulness_ratio']:.0%} -> {best['colorfulness_ratio']:.0%} at test MSE "
                    f"{before['mse']:.5f} -> {best['mse']:.5f}.")
    said.append("Near the MSE optimum any move away from the conditional mean costs MSE quadratically, so "
                "vividness is always bought with some MSE: the best run's trade-off curve over its decoding "
                "strength is best/tradeoff.png (`cae tradeoff RUN` draws it for any colorizer run).")
    return _findings("Desaturation.", *said)


def _decoder_statements(c, m: dict) -> list[str]:  # noqa: ANN001 - the run's ColorConfig
    """How the best run, a classifier over colour bins, is decoded."""
    what = ("the shipped colorizer (trained by `cae train --config colorize-best`, evaluated "
            "here), " if m.get("shipped") else "")
    said = [f"The best run is {what}a classifier over {c.bins}x{c.bins} (Cb, Cr) bins (Zhang et al. 2016"
            + (f", class rebalancing {c.rebalance:g}" if c.rebalance else ", no class rebalancing")
            + ") decoded by the annealed mean softmax(logits / T): T = 1 is the predicted distribution's "
            "mean, a smaller T leans towards its mode where the net is sure and stays near the mean where "
            "it is not, instead of saturating every pixel alike as a fixed gain does."]
    if c.decode_rebalance:
        said.append(f"It is decoded with a decoding-time rebalancing: logits + boost * log w, w the "
                    f"class-rebalancing weights at strength {c.decode_rebalance:g} from the training split's bin "
                    "shares, so a rare, saturated colour gains in proportion to the probability the net already "
                    "gives it.")
    return said


def _photos_text(photos: dict | None) -> str:
    """The real-photo findings, from `evaluate_photos`'s result (or why there is none)."""
    title = "32x32 training images against real photos."
    if not photos:
        return _findings(title, "No folder of real photos was given, so this study did not measure them; "
                                "`cae colorize --photos DIR` scores a colorizer on one.")
    s, rows = photos["summary"], photos["photos"]
    ws = photos["working_size"]
    fails = sorted((r for r in rows if r["gain_db"] < 0), key=lambda r: r["gain_db"])
    said = [f"On {s['photos']} photos of `{Path(photos['folder']).name}`, colorized at a working short side of "
            f"{ws if ws else 'native size'}{' px' if ws else ''} (the chroma predicted on a downscaled "
            "copy, upsampled and merged with the photo's own luma), the PSNR against the photo is "
            f"{s['mean_gain_db']:+.2f} dB over the gray copy on average, from {s['worst_gain_db']:+.2f} dB "
            f"({s['worst']}) to {s['best_gain_db']:+.2f} dB ({s['best']}); colorfulness "
            f"{s['colorfulness_ratio']:.0%} of the photos'."]
    if fails:
        said.append(f"{len(fails)} of {len(rows)} lose to the gray copy: "
                    + ", ".join(f"{r['name']} {r['gain_db']:+.2f} dB (colour {r['colorfulness_ratio']:.0%} of its "
                                f"own)" for r in fails) + ".")
    said.append(_failure_pattern(rows))
    said.append("A net that saw only 32x32 objects must guess a colour from the gray shape of the scene; "
                "where it guesses a wrong hue confidently, the error costs more than gray would.")
    return _findings(title, *said)


def _failure_pattern(rows: list[dict]) -> str:
    """Whether the photos that lose most are the colourful ones (Spearman rank correlation)."""
    if len(rows) < 4:
        return ""
    from scipy.stats import spearmanr

    rho = spearmanr([r["colorfulness_truth"] for r in rows], [r["gain_db"] for r in rows]).statistic
    if rho != rho:  # constant input
        return ""
    if rho < 0:
        return (f"The gain falls as the photo's own colorfulness rises (Spearman {rho:+.2f}): the more "
                "colourful a photo, the more a wrong guess of its colours costs. ")
    return (f"The gain rises with the photo's own colorfulness (Spearman {rho:+.2f}): the dullest photos lose "
            "most, since any colour guessed is colour they do not have. ")
