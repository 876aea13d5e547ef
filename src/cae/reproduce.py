"""`cae reproduce`: the whole study in eight resumable steps, ending in report.html.

    1 data        split sizes, class balance, normalization       -> OUT/data.json
    2 latent      the reference's shape trace and latent size       -> OUT/latent.json
    3 study       the architecture study (cae/studies/architecture.toml) -> OUT/study/;
                  its worker processes also train the colorization runs -> OUT/colorize/<run>/
    4 reference   the reference CAE: the study's reference variant (its pinned settings,
                  10 epochs), copied out of the study            -> OUT/reference/
    5 frontier    with `frontier=True` (--frontier) only: the frontier study
                  (cae/studies/frontier.toml), CAE against PCA    -> OUT/frontier/
    6 colorize    the colorization study (its runs' evaluation, the shipped colorizer's,
                  tables, photos)                                   -> OUT/colorize/
    7 hints       the hint study (cae.experiments.hint_study): the guided baselines, the
                  shipped colorizer and the shipped guided one against the number of hints,
                  on the photos and on CIFAR-10 test images; smaller than `cae hint-study`
                  unless `hints=True` (--hints) asks for the full one  -> OUT/hints/
    8 report      report.html (self-contained) and report.md        -> OUT/report.*

Each step's status and wall time are recorded atomically in OUT/steps.json. A finished step
is never run again; an interrupted one (status "interrupted", its time so far kept) is simply
run again and picks up where it stopped, because the training runs under it resume from their
last finished epoch. `force` starts every step over (the colorization folder is emptied first,
as run_colorization_study has no force flag of its own). The frontier step is skipped unless
asked for; asking for it on a finished folder runs it, then the report again, and so does
asking for the full hint study on a folder whose hints step ran the smaller one. The command,
versions, machine, seeds and wall times go to OUT/reproducibility.json.

`quick=True` runs the same pipeline on a stratified subset (QUICK_LIMIT images, one epoch,
a QUICK_VARIANTS-variant slice of the study file, the hint study at HINTS_SIZES["quick"]): a check
that the pipeline works end to end, not figures to quote.

The study file ships inside the package, `cae/studies/architecture.toml` (see `study_file`), so
an installed wheel runs the whole pipeline.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomli_w

from cae.core import runs
from cae.core.device import describe_cpu, torch_threads
from cae.core.text import Log, duration
from cae.errors import CaeError

STEPS_FILE = "steps.json"
REPRO_FILE = "reproducibility.json"
DATA_FILE = "data.json"
LATENT_FILE = "latent.json"
QUICK_LIMIT = 1500  # images in the quick subset (1,200 train / 150 val / 150 test)
QUICK_EPOCHS = 1
FULL_EPOCHS = 10  # the epochs of every run in the shipped study files and the colorization study
QUICK_VARIANTS = 4  # study variants kept in quick mode, spread over the study's latent sizes
SPEED_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "CAE_FAST")
REFERENCE_VARIANT = "reference"  # the study file's variant that is the reference step's run
STUDY_NAME = "architecture.toml"
FRONTIER_NAME = "frontier.toml"


@dataclass(frozen=True)
class Step:
    """One pipeline step: its key in steps.json, a title, and its expected cost.

    Costs are relative (the reference run = 1) and only feed the time-left estimate.
    """

    key: str
    title: str
    cost: float
    quick_cost: float
    trains: bool = False  # its cost is mostly training, so it scales with --epochs
    fixed: float = 0.0  # the share of the full cost that does not (each run's preparation and test, PCA)
    option: str = ""  # an optional step's command-line flag: it runs only when asked for
    full_option: str = ""  # the flag that asks for the full version of a step run smaller by default
    full_cost: float = 0.0  # the cost of that full version


# Each cost is the step's wall time over the reference run's, rounded, from timing the steps once
# per mode (timings belong in docs/performance.md). The full study's includes the colorization
# runs its CPU workers train (on one GPU, where they are not pooled, the colorize step takes ~6).
STEPS: tuple[Step, ...] = (
    Step("data", "data summary", 0.02, 0.1),
    Step("latent", "latent size", 0.0, 0.0),
    # the study trains the reference among its variants (one thread in a worker, not two in turn)
    Step("study", "architecture study", 17.0, 2.5, trains=True, fixed=0.06),
    Step("reference", "reference CAE", 0.01, 0.01),
    Step("frontier", "frontier study", 50.0, 1.5, trains=True, option="--frontier"),
    # its runs are trained in the study step; the shipped colorizer is evaluated here
    Step("colorize", "colorization study", 0.3, 2.5),
    # --hints: timed once as `cae hint-study` with the same defaults, 562 s wall (docs/guided.md)
    Step("hints", "hint study", 0.25, 0.15, full_option="--hints", full_cost=5.6),
    Step("report", "report", 0.01, 0.05),
)
# Seconds per cost unit (a reference run's wall time), by quick mode, assumed until the finished steps
# of this folder add up to half a reference run; `_eta` then uses their measured rate. The full
# run's holds with PRIOR_JOBS study workers on a machine whose study step (`train_step_seconds`)
# takes PRIOR_STEP_SECONDS (fitted on a full run, docs/performance.md); before a full run the
# rate is scaled to this machine's step and workers.
PRIOR_RATE = {False: 100.0, True: 20.0}
PRIOR_STEP_SECONDS = 0.019
PRIOR_JOBS = 2


@dataclass(frozen=True)
class HintsSize:
    """How much of the hint study the hints step runs."""

    cifar: int | None  # CIFAR-10 test images scored (None: the study's own CIFAR_LIMIT)
    photos: int  # photos of the folder scored, the first by name (0: all)
    draws: int | None  # hint draws per image (None: the study's own DRAWS)
    photo_methods: tuple[str, ...] | None = None  # the baselines scored on the photos (None: all)


# The full study costs minutes on 2 cores (docs/guided.md, "The hint study in cae reproduce"), more than
# the main job's time budget leaves: by default the step scores 100 CIFAR-10 images with one draw each,
# and leaves Levin (a sparse solve per photo and count, the study's dearest part) out on the photos;
# --hints runs `cae hint-study`'s own defaults. Quick mode: a handful of images, to see that it runs.
HINTS_SIZES = {"quick": HintsSize(cifar=10, photos=1, draws=1, photo_methods=("idw",)),
               "default": HintsSize(cifar=100, photos=0, draws=1, photo_methods=("idw",)),
               "full": HintsSize(cifar=None, photos=0, draws=None)}
GUIDED_WEIGHTS = "guided"  # the shipped guided colorizer's weights (cae/weights/guided)


@dataclass
class Settings:
    """What the pipeline is asked to do; stored in steps.json so a resumed run matches it."""

    quick: bool
    epochs: int | None
    limit: int

    def as_dict(self) -> dict[str, Any]:
        return {"quick": self.quick, "epochs": self.epochs, "limit": self.limit}


# ----------------------------------------------------------------------------- public API
def reproduce(out: str | Path, quick: bool = False, epochs: int | None = None, data_dir: str | None = None,
              force: bool = False, log: Log = print, photos: str | Path | None = "auto",
              frontier: bool = False, hints: bool = False, guided: str | Path | None = "shipped") -> dict[str, Any]:
    """Run the whole study into `out`, resumably; return the final steps.json content.

    `epochs` overrides the epochs of every training step (reference, study, colorization);
    `data_dir` is the CIFAR-10 folder (else $CAE_DATA_DIR / the user cache / a download);
    `force` starts every step (and every training run under it) over; `photos` is the folder of
    real photos the best colorizer is scored on ('auto': kodak-dev beside the data when present);
    `frontier` adds the frontier study (CAE against PCA, cae/studies/frontier.toml); `hints` makes
    the hints step the full hint study (HINTS_SIZES); `guided` is the guided colorizer it scores
    ('shipped': cae/weights/guided, left out with a note while none is shipped; a run folder; None).
    """
    if epochs is not None and epochs < 1:
        raise CaeError(f"--epochs must be at least 1, got {epochs}")
    out = Path(out)
    settings = Settings(quick=quick, epochs=epochs, limit=QUICK_LIMIT if quick else 0)
    with runs.RunLock(out):
        state = _load_state(out, settings, force)
        if frontier and state["steps"]["frontier"].get("status") != "done":
            state["steps"]["report"]["status"] = "pending"  # the report gains the frontier's section
        size = hints_size(quick, hints)
        if state["steps"]["hints"].get("status") == "done" and hints and state["steps"]["hints"].get("size") != size:
            state["steps"]["hints"]["status"] = "pending"  # the full study asked for after the smaller one
        if state["steps"]["hints"].get("status") != "done":
            state["steps"]["report"]["status"] = "pending"  # the report shows the hints step's study
        pipe = _Pipeline(out, settings, data_dir, force, log, state, photos, frontier, hints, guided)
        pipe.run()
        return pipe.state


def hints_size(quick: bool, full: bool) -> str:
    """The key of HINTS_SIZES the hints step runs: quick mode's, else the full one if asked for."""
    return "quick" if quick else "full" if full else "default"


def quick_study(src: Path, dest: Path, keep: int = QUICK_VARIANTS) -> Path:
    """Write a copy of the study file `src` to `dest` with only `keep` of its variants.

    The quick study must still answer the study's question (does the error fall with the latent
    size?), so it keeps the first variant (the reference) and, for `keep - 1` other latent sizes
    spread evenly over the sizes the file holds, the cheapest variant (fewest multiply-adds) of
    that size. The variants are the file's one array of tables; every other setting is copied.
    """
    from cae.core.spec import trace

    try:
        doc = tomllib.loads(src.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CaeError(f"study file {src} cannot be read ({e}); restore it from the repository") from None
    lists = [k for k, v in doc.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
    if len(lists) != 1:
        raise CaeError(f"study file {src}: expected one array of variant tables, found {len(lists)} "
                       f"({', '.join(lists) or 'none'}); cannot make the quick subset")
    variants = doc[lists[0]]
    infos = [trace(str(v.get("arch", ""))) for v in variants]
    cheapest: dict[int, int] = {}  # latent size -> index of its cheapest variant
    for i, info in enumerate(infos):
        j = cheapest.get(info.latent_size)
        if j is None or info.macs < infos[j].macs:
            cheapest[info.latent_size] = i
    sizes = sorted(size for size in cheapest if size != infos[0].latent_size)
    want = max(0, min(keep - 1, len(sizes)))
    picks = sorted({round(x * (len(sizes) - 1) / max(1, want - 1)) for x in range(want)}) if want else []
    chosen = sorted({0, *(cheapest[sizes[i]] for i in picks)})  # in the file's order
    doc[lists[0]] = [variants[i] for i in chosen]
    runs.atomic_write_text(dest, f"# quick subset of {src.name}, written by cae reproduce --quick\n"
                           + tomli_w.dumps(doc))
    return dest


# ----------------------------------------------------------------------------- state
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _step_names(i: int, step: Step) -> dict[str, Any]:
    """What the report reads of a step besides its status: its index, title and, for an optional
    step, the option that asks for it."""
    return {"index": i, "title": step.title, **({"option": step.option} if step.option else {})}


def _load_state(out: Path, settings: Settings, force: bool) -> dict[str, Any]:
    """steps.json, or a fresh state; a folder made with other settings is refused."""
    path = out / STEPS_FILE
    fresh = {"settings": settings.as_dict(),
             "steps": {s.key: {"status": "pending", **_step_names(i, s)} for i, s in enumerate(STEPS, 1)}}
    if force or not path.exists():
        return fresh
    state = runs.read_json(path, ("settings", "steps"))
    if state["settings"] != settings.as_dict():
        raise CaeError(f"{out} was made with settings {state['settings']}, not {settings.as_dict()}; "
                       "use the same flags to resume, another --out, or --force to start over")
    for i, s in enumerate(STEPS, 1):  # the report lists the steps by index, under these names
        state["steps"].setdefault(s.key, {"status": "pending"}).update(_step_names(i, s))
    return state


class _Pipeline:
    """Runs the steps in order, recording each one's status and wall time."""

    def __init__(self, out: Path, settings: Settings, data_dir: str | None, force: bool, log: Log,
                 state: dict[str, Any], photos: str | Path | None = "auto", frontier: bool = False,
                 hints: bool = False, guided: str | Path | None = "shipped"):
        self.out, self.settings, self.data_dir, self.force, self.log = out, settings, data_dir, force, log
        self.frontier = frontier  # run the optional frontier step
        self.hints = hints_size(settings.quick, hints)  # the hint study's size (HINTS_SIZES)
        self.guided = guided  # the guided colorizer of the hint study ('shipped', a run folder, None)
        self.state = state
        self.t0 = time.perf_counter()
        self._data = None
        self.photos = photos  # real photos for the colorization step ('auto': kodak-dev beside the data)
        self._invocation_recorded = False
        self.colorize_trained = False  # the study step trained the colorization runs in this call
        self._invocations: list[dict[str, str]] = []
        self._machine_rate: float | None = None  # `_prior_rate` of a full run, timed on first use

    # -- bookkeeping
    def _save(self) -> None:
        runs.write_json(self.out / STEPS_FILE, self.state)

    def _asked(self, step: Step) -> bool:
        """Every step but an optional one (the frontier), which runs only when asked for."""
        return not step.option or self.frontier

    def _cost(self, step: Step) -> float:
        if not self._asked(step):
            return 0.0
        if self.settings.quick:
            return step.quick_cost
        if step.full_option and self.hints == "full":
            return step.full_cost
        # the full costs are of the files' 10-epoch runs; --epochs N scales the training in them
        if not (self.settings.epochs and step.trains):
            return step.cost
        return step.cost * (step.fixed + (1 - step.fixed) * self.settings.epochs / FULL_EPOCHS)

    def _eta(self, remaining: list[Step]) -> float:
        """Seconds left: remaining cost times the rate measured on finished steps (else a prior)."""
        done = [(self._cost(s), self.state["steps"][s.key].get("seconds", 0.0)) for s in STEPS
                if self.state["steps"][s.key].get("status") == "done" and self._cost(s) > 0]
        cost, secs = sum(c for c, _ in done), sum(t for _, t in done)
        rate = secs / cost if cost >= 0.5 else self._prior_rate()
        return rate * sum(self._cost(s) for s in remaining)

    def _prior_rate(self) -> float:
        """PRIOR_RATE; for a full run scaled to this machine: its study step timed once (about two
        seconds), over the step the rate holds at, and the study's workers."""
        if self.settings.quick:
            return PRIOR_RATE[True]
        if self._machine_rate is None:
            from cae.experiments.bench import train_step_seconds
            from cae.experiments.sweep import default_jobs, threads_per_worker

            jobs = default_jobs()
            step = train_step_seconds(self._reference_config(), threads_per_worker(jobs))
            self._machine_rate = PRIOR_RATE[False] * step / PRIOR_STEP_SECONDS * PRIOR_JOBS / jobs
            self.log(f"speed check: a study training step takes {step * 1e3:.1f} ms here, on {jobs} worker(s); "
                     f"the step costs were timed at {PRIOR_STEP_SECONDS * 1e3:.1f} ms on {PRIOR_JOBS}, "
                     f"so the first estimate is theirs x {self._machine_rate / PRIOR_RATE[False]:.2f}")
        return self._machine_rate

    def data(self):  # noqa: ANN201 - Cifar10, loaded once and passed down
        if self._data is None:
            from cae.core.data import load_cifar10

            self._data = load_cifar10(self.data_dir)
        return self._data

    def run(self) -> None:
        if self.force:
            self._save()
        for i, step in enumerate(STEPS, 1):
            rec = self.state["steps"][step.key]
            elapsed = duration(time.perf_counter() - self.t0)
            if rec.get("status") == "done":
                self.log(f"[step {i}/{len(STEPS)}] {step.title} — done earlier in "
                         f"{duration(rec.get('seconds', 0))}, skipped")
                continue
            if not self._asked(step):
                self.log(f"[step {i}/{len(STEPS)}] {step.title} — not asked for ({step.option}), skipped")
                rec.update(status="skipped")  # the report names it with its option
                continue
            left = duration(self._eta(list(STEPS[i - 1:])))
            self.log(f"[step {i}/{len(STEPS)}] {step.title} — elapsed {elapsed}, estimated time left {left}")
            self._record_invocation()
            rec.update(status="running", started=_now())
            self._save()
            t = time.perf_counter()
            earlier = float(rec.pop("interrupted_seconds", 0.0))  # time spent by interrupted attempts
            try:
                getattr(self, f"step_{step.key}")()
            except BaseException:  # Ctrl-C, SIGTERM or an error: record the attempt, resume next time
                rec.update(status="interrupted", interrupted_seconds=round(earlier + time.perf_counter() - t, 2))
                self._save()
                raise
            rec.update(status="done", finished=_now(), seconds=round(earlier + time.perf_counter() - t, 2))
            self._save()
            self._write_reproducibility()
        self.log(f"[done] {len(STEPS)} steps in {self.out} — elapsed {duration(time.perf_counter() - self.t0)}; "
                 f"open {self.out / 'report.html'}")

    # -- the steps
    def step_data(self) -> None:
        from cae.core.config import RunConfig
        from cae.core.data import SPLIT_FRACTIONS, channel_stats, class_balance, split_indices

        cfg = self._reference_config()
        data = self.data()
        split = split_indices(data.labels, cfg.data.seed, cfg.data.limit)
        balance = class_balance(data.labels, split)
        counts = {k: [round(f * len(split[k])) for f in v] for k, v in balance.items()}
        mean, std = channel_stats(data.images[split["train"]])
        runs.write_json(self.out / DATA_FILE, {
            "source": str(data.source), "total_images": int(len(data.labels)), "limit": cfg.data.limit,
            "split_seed": cfg.data.seed, "fractions": list(SPLIT_FRACTIONS),
            "sizes": {k: int(len(v)) for k, v in split.items()}, "classes": list(data.classes),
            "class_balance": balance, "class_counts": counts,
            "normalize": cfg.data.normalize, "default_normalize": RunConfig().data.normalize,
            "train_channel_mean": mean, "train_channel_std": std,
        })

    def _reference_config(self):  # noqa: ANN202 - RunConfig
        """The study file's "reference" variant: the handout's CAE at the settings the study pins
        (float32, batch 64, lr 7e-3), so the study's reference is also the reference step's run."""
        from cae.experiments.study import load_study, study_file

        study = load_study(study_file(STUDY_NAME), self._epochs(), self.settings.limit or None, self.data_dir)
        return next(v.cfg for v in study.variants if v.name == REFERENCE_VARIANT)

    def _epochs(self) -> int | None:
        """Every training step's epochs: --epochs, one in quick mode, else each file's own (10)."""
        return self.settings.epochs or (QUICK_EPOCHS if self.settings.quick else None)

    def step_reference(self) -> None:
        """Copy the study's reference variant out (train_run then checks that its config is the
        reference's); train it here only if the study has not (a folder from an earlier version)."""
        from cae import train_run

        src, dest = self.out / "study" / REFERENCE_VARIANT, self.out / "reference"
        copied = runs.is_finished(src) and (self.force or not runs.is_finished(dest))
        if copied:
            self._copy_run(src, dest)
        train_run(self._reference_config(), dest, force=self.force and not copied, data=self.data(), log=self.log)

    def step_latent(self) -> None:
        from cae.core.spec import trace

        info = trace("reference").to_dict()
        info.update(input_shape=[3, 32, 32], compression=3 * 32 * 32 / info["latent_size"])
        runs.write_json(self.out / LATENT_FILE, info)

    def step_study(self, name: str = STUDY_NAME, folder: str = "study") -> None:
        from cae.experiments.study import study_file
        from cae.experiments.sweep import default_jobs, run_sweep

        path = study_file(name)
        if self.settings.quick:
            path = quick_study(path, self.out / f"{folder}-quick.toml")
        # quick variants train in seconds, less than a worker process takes to start (spawn, import
        # torch, read the data): one process. The full study's variants take minutes: one per core.
        jobs = 1 if self.settings.quick else default_jobs()
        also = self._colorization_runs() if folder == "study" and jobs > 1 else []
        run_sweep(path, self.out / folder, epochs=self._epochs(), limit=self.settings.limit or None,
                  data_dir=self.data_dir, force=self.force, jobs=jobs, log=self.log, also=also)
        self.colorize_trained = self.colorize_trained or bool(also)

    def _copy_run(self, src: Path, dest: Path) -> None:
        """Copy the finished run `src` to `dest`, replacing it: the study's reference variant and the
        reference step's run are one run (`_reference_config`), trained once."""
        tmp = dest.with_name(f".{dest.name}.copying")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(runs.LOCK))
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)  # an interrupted copy leaves no half run folder behind
        self.log(f"{dest} is {src} (the same run): copied")

    def _colorization_runs(self) -> list:
        """The colorization step's runs, for the study's workers to train: pooled, the last long
        variants no longer leave a core idle, and on one thread each the runs cost less CPU than
        on two in turn (docs/performance.md, "Where the time goes"). The colorize step then finds
        them finished and only evaluates them."""
        from cae.experiments.colorization import planned_runs

        planned = planned_runs(epochs=self._epochs(), limit=self.settings.limit, data_dir=self.data_dir)
        return [(f"colorize/{name}", cfg, self.out / "colorize" / name) for name, cfg in planned.items()]

    def step_frontier(self) -> None:
        self.step_study(FRONTIER_NAME, "frontier")

    def step_colorize(self) -> None:
        from cae.experiments.colorization import run_colorization_study

        if self.force and not self.colorize_trained and (self.out / "colorize").exists():
            # run_colorization_study has no force flag: it skips finished runs, so start it on an empty folder
            self.log(f"--force: removing {self.out / 'colorize'} to train the colorization runs again")
            shutil.rmtree(self.out / "colorize")
        # the runs were trained by the study step's workers (unless that step finished before it
        # pooled them): what is left is their evaluation, the tables and the photos
        run_colorization_study(self.out / "colorize", epochs=self._epochs(), limit=self.settings.limit,
                               data=self.data(), data_dir=self.data_dir, log=self.log, photos=self.photos)

    def step_hints(self) -> None:
        """The hint study into OUT/hints/ at this run's size, on the colorize step's photo folder
        and the CIFAR-10 test split, with the shipped colorizer and guided colorizer."""
        from cae.experiments.hint_study import CIFAR_LIMIT, DRAWS, cifar_test_images, run_hint_study
        from cae.experiments.photos import default_photos_dir

        size = HINTS_SIZES[self.hints]
        photos = default_photos_dir() if self.photos == "auto" else self.photos
        cifar = cifar_test_images(limit=CIFAR_LIMIT if size.cifar is None else size.cifar, data=self.data())
        self.log(f"hint study ({self.hints}): {len(cifar)} CIFAR-10 test images"
                 + (f" and {'all' if not size.photos else f'the first {size.photos}'} photos of {photos}"
                    if photos else " (no photo folder)"))
        draws = DRAWS if size.draws is None else size.draws
        # one thread: the study's work comes in small pieces (a 32x32 prediction, a photo's sparse
        # solve in scipy) that a second thread cannot split, and that spins on a busy machine
        with torch_threads(1):
            run_hint_study(self.out / "hints", photos=photos, cifar=cifar, draws=draws,
                           model_dir=runs.shipped_run("colorizer"), guided_dir=self._guided_dir(), log=self.log,
                           photo_limit=size.photos, photo_names=size.photo_methods)
        self.state["steps"]["hints"]["size"] = self.hints  # saved with the step's "done"

    def _guided_dir(self) -> Path | None:
        """The guided colorizer the hint study scores: the shipped one while it exists, else none."""
        if self.guided != "shipped":
            return None if self.guided is None else Path(self.guided)
        try:
            return runs.shipped_run(GUIDED_WEIGHTS)
        except CaeError:
            self.log("hint study: no guided colorizer is shipped (cae/weights/guided), so it scores the baselines "
                     "and the automatic colorizer only")
            return None

    def step_report(self) -> None:
        from cae.report import write_report

        self._write_reproducibility()  # so the report shows this step's predecessors' times
        html, md = write_report(self.out)
        self.log(f"wrote {html} and {md}")

    # -- reproducibility.json
    def _record_invocation(self) -> None:
        """Append this command to reproducibility.json once, when it first runs a step."""
        if self._invocation_recorded:
            return
        self._invocation_recorded = True
        path = self.out / REPRO_FILE
        prev = runs.read_json(path) if path.exists() and not self.force else {}
        invocations = prev.get("invocations", [])
        invocations.append({"command": _command_line(), "started": _now(), "cwd": os.getcwd()})
        self._invocations = invocations
        self._write_reproducibility()

    def _write_reproducibility(self) -> None:
        steps = self.state["steps"]
        seconds = {s.key: steps[s.key].get("seconds") for s in STEPS}
        runs.write_json(self.out / REPRO_FILE, {
            "command": self._invocations[-1]["command"] if self._invocations else _command_line(),
            "invocations": self._invocations,
            "settings": self.settings.as_dict(), "versions": _versions(), "machine": _machine(),
            "seeds": _seeds(self.out), "step_seconds": seconds,
            "total_seconds": round(sum(v for v in seconds.values() if v), 2),
        })


# ----------------------------------------------------------------------------- environment
def _command_line() -> str:
    """The command as typed (`cae ...` when run through the console script)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("cae", "__main__.py"):
        argv[0] = "cae"
    return shlex.join(argv)


def _versions() -> dict[str, str]:
    from cae import __version__

    v = {"python": platform.python_version(), "cae": __version__}
    for dist in ("torch", "numpy", "scipy", "kornia", "matplotlib", "pillow"):
        try:
            v[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            v[dist] = "not installed"
    return v


def _machine() -> dict[str, Any]:
    import torch

    # variables that change the kernels or threads a run gets (e.g. a CPU limited to AVX2 for a
    # comparison): the CPU's own features alone would misdescribe such a run
    limits = " ".join(f"{k}={os.environ[k]}" for k in SPEED_VARIABLES if os.environ.get(k))
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "cpu": describe_cpu(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "speed_settings": limits or None}


def _seeds(out: Path) -> dict[str, dict[str, int]]:
    """The split and training seeds of every run folder under `out`, read from its config.toml."""
    seeds = {}
    for cfg_path in sorted(out.rglob(runs.CONFIG)):
        try:
            d = tomllib.loads(cfg_path.read_text())
            seeds[cfg_path.parent.relative_to(out).as_posix()] = {
                "split_seed": int(d["data"]["seed"]), "train_seed": int(d["train"]["seed"])}
        except (OSError, KeyError, ValueError, TypeError, tomllib.TOMLDecodeError):
            continue  # a run folder being written; its seeds appear at the next update
    return seeds
