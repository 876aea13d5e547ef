"""The `cae` command: argument parsing over the API, known errors as one line (exit 2).

Every command is a few lines calling one API function; no logic lives here.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Sequence

from cae.core.text import os_error_line
from cae.errors import CaeError


def _config_from_args(a: argparse.Namespace):  # noqa: ANN202 - RunConfig
    """A RunConfig from --config (if any) with the flags given beside it overriding it."""
    from cae.core.config import RunConfig, load_config

    cfg = load_config(a.config) if a.config else RunConfig()
    overrides = {"task": a.task, "target": a.target, "arch": a.arch}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    for key in ("epochs", "batch_size", "lr", "schedule", "clip", "warmup", "seed", "precision", "device", "flip", "shift", "val_subset"):
        value = getattr(a, key)
        if value is not None:
            setattr(cfg.train, key, value)
    if a.data is not None:
        cfg.data.dir = a.data
    if a.limit is not None:
        cfg.data.limit = a.limit
    if a.normalize is not None:
        cfg.data.normalize = a.normalize
    if a.split_seed is not None:
        cfg.data.seed = a.split_seed
    return cfg.validate()


def cmd_train(a: argparse.Namespace) -> int:
    from cae import train_run  # the public API: the fast path unless CAE_FAST=0

    cfg = _config_from_args(a)
    train_run(cfg, a.out, force=a.force, progress=not a.quiet)
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from cae import eval_run  # through the trainer's path, as the run's test_metrics.json was made
    from cae.core.data import load_cifar10

    data = load_cifar10(a.data) if a.data else None
    result = eval_run(a.run, data=data, device=a.device, precision=a.precision)
    if a.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print("  ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from cae.core.config import load_config
    from cae.core.spec import trace
    from cae.core.tasks import Task

    if a.model:
        return _print_card(a)
    if a.config:
        cfg = load_config(a.config)
        task = Task.from_config(cfg)
        spec = a.arch or cfg.arch
    else:
        spec, task = a.arch or "reference", None
    in_c = task.in_channels if task else 3
    out_c = task.out_channels if task else 3
    info = trace(spec, (in_c, 32, 32), out_c)
    if a.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    print(f"architecture: {spec}")
    print(f"{'stage':<8} {'layer':<22} {'output':>10} {'size':>7} {'params':>7} {'MACs':>11}  formula C*((W-K+2P)/S+1)^2")
    for r in info.trace:
        shape = "x".join(map(str, r.shape))
        print(f"{r.stage:<8} {r.layer:<22} {shape:>10} {r.size:>7,} {r.params:>7,} {r.macs:>11,}  {r.formula}")
    c, h, w = info.latent_shape
    print(f"latent: {c}x{h}x{w} = {info.latent_size:,} values (compression {in_c * 32 * 32 / info.latent_size:.2f}x)")
    print(f"parameters: {info.params:,}   multiply-adds per image: {info.macs:,}")
    return 0


def _print_card(a: argparse.Namespace) -> int:
    """`cae info --model NAME`: the shipped model's card (cae/weights/NAME/MODEL_CARD.md)."""
    from cae.report.card import read_card

    if a.arch or a.config:
        raise CaeError("--model prints a shipped model's card; give it alone, or --arch / --config for a layer table")
    card = read_card(a.model)
    print(json.dumps({"model": a.model, "card": card}, indent=2) if a.json else card, end="" if not a.json else "\n")
    return 0


def cmd_sweep(a: argparse.Namespace) -> int:
    from cae.experiments.sweep import default_jobs, parse_shard, run_shard, run_sweep

    jobs = default_jobs() if a.jobs == "auto" else _whole(a.jobs, "--jobs")
    options = dict(epochs=a.epochs, limit=a.limit, data_dir=a.data, force=a.force, jobs=jobs)
    if a.shard is not None:
        run_shard(a.study, a.out, parse_shard(a.shard), **options)
    else:
        run_sweep(a.study, a.out, **options)
    return 0


def cmd_colorize(a: argparse.Namespace) -> int:
    from cae.apps.colorize import colorize_files, shipped_model_dir
    from cae.experiments.photos import evaluate_photos

    if a.photos:  # score the colorizer on a folder of photos against the photos themselves
        evaluate_photos(a.photos, a.out, model_dir=a.model or shipped_model_dir(), working_size=a.working_size,
                        device=a.device, boost=a.boost)
    if not a.images:
        if not a.photos:
            raise CaeError("give images to colorize, or --photos DIR to score the colorizer on a folder")
        return 0
    failures = colorize_files(a.images, a.out, model_dir=a.model, compare=a.compare, device=a.device,
                              working_size=a.working_size, boost=a.boost, hints=a.hints, method=a.method)
    return 1 if failures else 0


def cmd_export(a: argparse.Namespace) -> int:
    from cae import export_onnx

    path = export_onnx(a.run, a.onnx, boost=a.boost)
    print(f"wrote {path}")
    return 0


def cmd_hint_study(a: argparse.Namespace) -> int:
    from cae.apps.colorize import shipped_model_dir
    from cae.core.runs import shipped_run
    from cae.experiments.hint_study import cifar_test_images, run_hint_study
    from cae.experiments.photos import default_photos_dir

    photos = None if a.photos == "none" else a.photos or default_photos_dir()
    if a.photos is None and photos is None:
        raise CaeError("no photo folder: pass --photos DIR (or --photos none), or set CAE_PHOTOS_DIR")
    cifar = cifar_test_images(a.data, a.cifar) if a.cifar >= 0 else None
    model = None if a.model == "none" else shipped_model_dir() if a.model == "shipped" else a.model
    guided = None if a.guided == "none" else shipped_run("guided") if a.guided == "shipped" else a.guided
    counts = parse_counts(a.counts)
    run_hint_study(a.out, photos=photos, cifar=cifar, names=[m for m in a.methods.split(",") if m],
                   counts=counts, draws=a.draws, seed=a.seed, model_dir=model, guided_dir=guided)
    return 0


def parse_counts(text: str) -> list[int]:
    """'0,1,5' -> [0, 1, 5]; else a one-line CaeError."""
    try:
        counts = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 0:
        raise CaeError(f"--counts is a comma-separated list of hint numbers >= 0 (0,1,2,5), got {text!r}")
    return counts


def cmd_tradeoff(a: argparse.Namespace) -> int:
    from cae.core.data import load_cifar10
    from cae.experiments.tradeoff import run_tradeoff

    run_tradeoff(a.runs or ["shipped"], a.out, data=load_cifar10(a.data) if a.data else None, device=a.device,
                 split=a.split)
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from cae.experiments.bench import run_bench

    run_bench(steps=a.steps, data_dir=a.data, json_path=a.json, batch_size=a.batch_size, precision=a.precision)
    return 0


def cmd_reproduce(a: argparse.Namespace) -> int:
    from cae.reproduce import reproduce

    reproduce(a.out, quick=a.quick, epochs=a.epochs, data_dir=a.data, force=a.force, photos=a.photos or "auto",
              frontier=a.frontier, hints=a.hints)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from cae.report import write_report

    html, md = write_report(a.dir)
    print(f"wrote {html} and {md}")
    if a.readme:
        from pathlib import Path

        from cae.report.readme import update_readme

        snapshot = update_readme(Path(a.dir), Path(a.readme))
        print(f"wrote the results table of {a.readme} from {a.dir} (snapshot in {snapshot}) and, in a checkout, "
              "the shipped models' MODEL_CARD.md")
    return 0


def _serve(a: argparse.Namespace) -> int:
    try:  # all three packages of the extra, so a partial install is the same one line
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401

        from cae.apps.serve.app import serve
    except ModuleNotFoundError as e:
        if e.name in ("starlette", "uvicorn", "python_multipart", "anyio"):
            raise CaeError("cae serve needs the serve extra: pip install 'cae[serve]'") from None
        raise
    serve(a.host, a.port, a.runs)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cae import __version__

    p = argparse.ArgumentParser(prog="cae", description="Convolutional autoencoders on CIFAR-10: "
                                "reconstruction, architecture study, colorization.")
    p.add_argument("--version", action="version", version=f"cae {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_info(sub)
    _add_sweep(sub)
    _add_colorize(sub)
    _add_tradeoff(sub)
    _add_export(sub)
    _add_hint_study(sub)
    _add_bench(sub)
    _add_reproduce(sub)
    _add_report(sub)
    _add_serve(sub)
    return p


def _add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train one run into a run folder (resumes an unfinished one)")
    t.add_argument("--config", help="a config file (.toml/.json) as saved with every run, or a shipped "
                   "config by name (reference, colorize-best, beats-pca, ...)")
    t.add_argument("--task", choices=("reconstruct", "colorize"))
    t.add_argument("--target", choices=("rgb", "ycbcr", "lab"), help="colorize: predict RGB or chrominance")
    t.add_argument("--arch", help="a preset name or an architecture spec (see `cae info`)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="peak learning rate")
    t.add_argument("--schedule", choices=("onecycle", "cosine", "constant"))
    t.add_argument("--warmup", type=float, metavar="F", help="onecycle: the fraction of steps spent warming up")
    t.add_argument("--clip", type=float, metavar="NORM",
                   help="largest global gradient norm of a step (0: no clipping)")
    t.add_argument("--seed", type=int, help="model initialisation and shuffling seed")
    t.add_argument("--split-seed", type=int, help="seed of the 80/10/10 split")
    t.add_argument("--precision", choices=("auto", "fp32", "bf16"))
    t.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="mirror a seeded half of each epoch's training images left-right")
    t.add_argument("--shift", type=int, metavar="N",
                   help="translate each training image by up to N pixels per axis (seeded, reflected border)")
    t.add_argument("--val-subset", type=int, metavar="N",
                   help="validate each epoch on the first N validation images (the best epoch's val MSE on all)")
    t.add_argument("--normalize", choices=("unit", "standardize"))
    t.add_argument("--device", help="auto, cpu or cuda")
    t.add_argument("--data", help="folder holding cifar-10-batches-bin/ (or that folder)")
    t.add_argument("--limit", type=int, help="train on a stratified subset of N images")
    t.add_argument("--out", required=True, help="the run folder")
    t.add_argument("--force", action="store_true", help="start over even if the run is finished")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="recompute a run's test metrics from its checkpoint")
    e.add_argument("run")
    e.add_argument("--data")
    e.add_argument("--device", default="auto")
    e.add_argument("--precision", choices=("fp32", "bf16"), help="default: the precision the run recorded")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)


def _add_info(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("info", help="layer table, latent size, parameters and multiply-adds; "
                                    "--model NAME: a shipped model's card")
    i.add_argument("--arch")
    i.add_argument("--model", help="a shipped model (reference, colorizer): print its model card")
    i.add_argument("--config", help="a config file or a shipped config's name, as for train")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)


def _whole(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CaeError(f"{flag} {text!r} is not a whole number (or auto)") from None


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="train every variant of a study file, then tabulate and plot")
    s.add_argument("study")
    s.add_argument("--out", required=True)
    s.add_argument("--epochs", type=int)
    s.add_argument("--limit", type=int)
    s.add_argument("--data")
    s.add_argument("--force", action="store_true")
    s.add_argument("--jobs", default="auto", metavar="N",
                   help="train N variants at once, each in its own process with 1/N of the CPU threads "
                        "(default auto: one per CPU core, one on a GPU; 1: one after another in this process)")
    s.add_argument("--shard", metavar="I/N",
                   help="train only share I of N (1-based) of the variants into the shared --out, for a "
                        "cluster; writes no results: run once more without --shard to merge them")
    s.set_defaults(func=cmd_sweep)


def _add_tradeoff(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tradeoff", help="a colorizer's MSE against its colorfulness over its decoding strength")
    t.add_argument("runs", nargs="*", metavar="[LABEL=]RUN[:PARAM]",
                   help="colorizer run folders ('shipped': the shipped colorizer, the default); PARAM "
                   "boost, temperature or chroma_gain (default: the one the run calibrated); LABEL names "
                   "its line in the plot")
    t.add_argument("--out", required=True, help="folder for tradeoff.csv and tradeoff.png")
    t.add_argument("--split", choices=("test", "val"), default="test", help="the part of each run's split to score")
    t.add_argument("--data", help="folder holding cifar-10-batches-bin/ (or that folder)")
    t.add_argument("--device", default="auto")
    t.set_defaults(func=cmd_tradeoff)


def _add_hint_study(sub: argparse._SubParsersAction) -> None:
    from cae.experiments.hint_study import CIFAR_LIMIT, DRAWS, HINT_COUNTS, SEED

    h = sub.add_parser("hint-study", help="PSNR gain and colorfulness against the number of random hints, "
                       "per guided method, on photos and CIFAR-10 (docs/guided.md)")
    h.add_argument("--out", required=True, help="folder for hint_study.csv and hint_study.json")
    h.add_argument("--photos", metavar="DIR", help="photo folder (default: $CAE_PHOTOS_DIR or kodak-dev next to "
                   "the CIFAR-10 data; 'none': no photos)")
    h.add_argument("--cifar", type=int, default=CIFAR_LIMIT, metavar="N",
                   help=f"score the first N images of the CIFAR-10 test split (default {CIFAR_LIMIT}; 0: all; "
                        "-1: none)")
    h.add_argument("--data", help="folder holding cifar-10-batches-bin/ (or that folder)")
    h.add_argument("--methods", default="idw,levin", help="guided methods, comma-separated (default idw,levin)")
    h.add_argument("--model", default="shipped", help="the automatic colorizer scored at 0 hints: 'shipped', a run "
                   "folder, or 'none'")
    h.add_argument("--guided", default="shipped", help="the guided colorizer scored at every count: 'shipped', a "
                   "run folder trained with color.hints, or 'none'")
    h.add_argument("--counts", default=",".join(map(str, HINT_COUNTS)),
                   help="numbers of hints, comma-separated (default %(default)s)")
    h.add_argument("--draws", type=int, default=DRAWS, help=f"hint draws per image (default {DRAWS})")
    h.add_argument("--seed", type=int, default=SEED, help=f"seed of the draws (default {SEED})")
    h.set_defaults(func=cmd_hint_study)


def _add_colorize(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("colorize", help="colorize photos with a trained (or the shipped) model")
    c.add_argument("images", nargs="*", help="photos to colorize (PNG, JPEG, ...; any size), or folders of them")
    c.add_argument("--model", help="a colorization run folder (default: the colorizer shipped with cae; with "
                   "--hints, the shipped guided colorizer)")
    c.add_argument("--out", required=True, help="folder for a <stem>.png per photo (never over an input photo)")
    c.add_argument("--compare", action="store_true",
                   help="also write <stem>_original.png and <stem>_gray.png next to each output")
    c.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    c.add_argument("--working-size", type=int, default=None, metavar="N",
                   help="short side (pixels) the chroma is predicted at, then upsampled; 0 = native size "
                        "(default: the model's color.working_size)")
    c.add_argument("--boost", type=float, default=None, metavar="B",
                   help="a classifier colorizer's decoding-time rebalancing: 0 = the predicted mean colour, "
                        "higher = more vivid (default: the model's color.photo_boost)")
    c.add_argument("--hints", metavar="FILE", help="a hints file (JSON: colours at points of the photo, see "
                   "docs/guided.md) for the one photo given")
    c.add_argument("--method", default="model", choices=("model", "levin", "idw"),
                   help="model: the colorizer (default); levin, idw: spread the hints' colours without learning "
                        "(Levin et al. 2004; inverse distance), at a working size of 256 unless --working-size")
    c.add_argument("--photos", metavar="DIR", help="score the colorizer on every photo of DIR (PSNR gain over the "
                   "gray copy, colorfulness): writes photos.csv, photos.json, photos.png into --out")
    c.set_defaults(func=cmd_colorize)


def _add_export(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("export", help="a trained model as an ONNX graph (images in [0, 1] in and out), for onnxruntime")
    x.add_argument("run", help="a run folder (cae train --out) or a shipped model: reference, colorizer")
    x.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    x.add_argument("--boost", type=float, default=None, metavar="B",
                   help="a classifier colorizer's decoding-time rebalancing, fixed in the graph "
                        "(default: the model's color.photo_boost, as cae colorize)")
    x.set_defaults(func=cmd_export)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="training/evaluation speed against a naive loop, side by side")
    b.add_argument("--steps", type=int, default=200)
    b.add_argument("--batch-size", type=int)
    b.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="the fast path's precision (the naive loop is always float32)")
    b.add_argument("--data")
    b.add_argument("--json", help="write the figures to this JSON file")
    b.set_defaults(func=cmd_bench)


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    from cae.experiments.hint_study import CIFAR_LIMIT, DRAWS

    r = sub.add_parser("reproduce", help="the whole study, resumably, ending in report.html")
    r.add_argument("--out", required=True)
    r.add_argument("--quick", action="store_true", help="small subset, few epochs (minutes)")
    r.add_argument("--epochs", type=int)
    r.add_argument("--data")
    r.add_argument("--photos", metavar="DIR", help="real photos to score the best colorizer on "
                   "(default: kodak-dev beside the data, when present)")
    r.add_argument("--frontier", action="store_true", help="also run the frontier study (CAE against PCA "
                   "over latent sizes 16-1024; about 1-1.5 hours on 2 cores), added to a finished folder if given later")
    r.add_argument("--hints", action="store_true", help=f"the full hint study (as cae hint-study: {CIFAR_LIMIT} "
                   f"CIFAR-10 images, {DRAWS} draws, Levin on the photos too; about 10 minutes on 2 cores) instead of "
                   "the smaller default (docs/guided.md), run on a finished folder if given later")
    r.add_argument("--force", action="store_true")
    r.set_defaults(func=cmd_reproduce)


def _add_report(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="regenerate report.html/report.md from finished results")
    rep.add_argument("dir")
    rep.add_argument("--readme", help="also rewrite this README's results table from DIR (a full run)")
    rep.set_defaults(func=cmd_report)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    sv = sub.add_parser("serve", help="a local web page: colorize photos, look inside the autoencoders")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    sv.add_argument("--runs", help="a folder whose finished runs and cae reproduce reports the page offers")
    sv.set_defaults(func=_serve)


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # epoch lines show up at once in logs too
    signal.signal(signal.SIGTERM, _sigterm)  # same clean stop as Ctrl-C
    try:
        return a.func(a)
    except CaeError as e:
        print(f"cae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cae: interrupted; finished epochs are saved; run the same command again to resume",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # a path that cannot be written, a full disk: the user's to fix, not a bug
        print(f"cae: error: {os_error_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
