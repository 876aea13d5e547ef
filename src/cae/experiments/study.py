"""The architecture study (`cae sweep`): train every variant of a study file, then compare.

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
import functools
import io
import math
import multiprocessing
import os
import queue
import re
import signal
import time
import tomllib
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cae.core import runs
from cae.core.spec import ArchInfo, expand, trace
from cae.core.config import DataConfig, RunConfig, TrainConfig, dataclass_from_dict
from cae.core.text import Log
from cae.experiments.frontier import WINNER_MAX_LATENT, WINNER_SEEDS, winner, write_frontier
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
    path = Path(name)
    if path.is_file():
        return path
    shipped = SHIPPED_STUDIES / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
    if shipped.is_file() and len(path.parts) <= 2:  # a bare name, or the old repo path studies/NAME
        return shipped
    have = ", ".join(sorted(p.stem for p in SHIPPED_STUDIES.glob("*.toml"))) or "none"
    raise CaeError(f"study file {path} not found; pass an existing .toml file or a shipped study ({have})")


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


# ----------------------------------------------------------------------------- running
def run_sweep(study_path: str | Path, out: str | Path, epochs: int | None = None, limit: int | None = None,
              data_dir: str | None = None, force: bool = False, *, jobs: int = 1, progress: bool = True,
              log: Log = print) -> list[dict]:
    """Train every variant of a study into OUT/<name>/, then write the comparison; returns its rows.

    Finished variants are skipped (unless `force`), an interrupted one resumes. The variants are
    all validated first, so a typo in the last one does not surface after an hour of training.
    `jobs` > 1 trains that many variants at once, each in its own process (see `train_variants`);
    the processes are spawned, so a script calling this needs the `if __name__ == "__main__":`
    guard. The study folder is locked for the whole call: it alone writes study.toml and results.
    """
    study = load_study(study_path, epochs, limit, data_dir)
    out = Path(out)
    check_jobs(jobs)
    with runs.RunLock(out):
        runs.atomic_write_text(out / STUDY_COPY, study.text)
        n = len(study.variants)
        total_macs = sum(v.info.macs for v in study.variants)
        log(f"study {study.title}: {n} variants, {total_macs / 1e6:.1f}M multiply-adds per image in all -> {out}")
        data = _data_once(study)
        start = time.perf_counter()
        trained = train_variants(study, study.variants, out, force=force, jobs=jobs, data=data, progress=progress,
                                 log=log)
        if study.analysis == "frontier":
            extra = winner_seeds(study, out, data(), force, log)
            trained += train_variants(study, extra, out, force=force, jobs=jobs, data=data, progress=progress, log=log)
        log(f"all {n} variants finished ({len(trained)} trained now, in {time.perf_counter() - start:.0f}s); "
            "PCA baseline and results next")
        return write_results(study, out, data(), force=force, log=log)


def winner_seeds(study: Study, out: Path, data: Any, force: bool, log: Log) -> list[Variant]:
    """A frontier study's extra runs: the run that beats PCA by most (`frontier.winner`) again
    with the next WINNER_SEEDS - 1 seeds, added to `study.variants` (none when nothing wins)."""
    pca = pca_results(study, out, data, force, log)
    name = winner([variant_row(v, out / v.name, pca) for v in study.variants])
    if name is None:
        log("no run beats PCA at a latent size up to "
            f"{WINNER_MAX_LATENT}: no extra seeds")
        return []
    v = next(v for v in study.variants if v.name == name)
    extra = []
    for seed in range(v.cfg.train.seed + 1, v.cfg.train.seed + WINNER_SEEDS):
        cfg = copy.deepcopy(v.cfg)
        cfg.train.seed = seed
        extra.append(Variant(f"{v.name}-seed{seed}", v.arch, v.axis, f"{v.note} (seed {seed})".strip(), cfg, v.info))
    log(f"{name} beats PCA by the most: training it with seeds {', '.join(str(e.cfg.train.seed) for e in extra)} too")
    study.variants += extra
    return extra


def run_shard(study_path: str | Path, out: str | Path, shard: tuple[int, int] | str, epochs: int | None = None,
              limit: int | None = None, data_dir: str | None = None, force: bool = False, *, jobs: int = 1,
              progress: bool = True, log: Log = print) -> list[str]:
    """Train one share of a study's variants (shard (I, N): those whose 0-based index % N == I - 1)
    into the shared OUT; returns the names it trained.

    A shard writes no study-level file (study.toml, results): other shards may still be running.
    It takes no lock on OUT either, only each run folder's own lock (in `train_run`), so shards
    run at once on a shared folder. `run_sweep` on OUT afterwards skips the finished variants,
    trains any a shard left unfinished, and writes the results (the merge).
    """
    index, count = parse_shard(shard) if isinstance(shard, str) else check_shard(*shard)
    study = load_study(study_path, epochs, limit, data_dir)
    check_jobs(jobs)
    out = Path(out)
    mine = shard_variants(study.variants, index, count)
    log(f"study {study.title}: shard {index}/{count}, {len(mine)} of {len(study.variants)} variants "
        f"({', '.join(v.name for v in mine) or 'none'}) -> {out}")
    trained = train_variants(study, mine, out, force=force, jobs=jobs, data=_data_once(study),
                             progress=progress, log=log)
    skipped = [v.name for v in mine if v.name not in trained]
    log(f"shard {index}/{count} done: trained {', '.join(trained) or 'none'}"
        + (f"; finished already: {', '.join(skipped)}" if skipped else "")
        + f". Once every shard is done, `cae sweep STUDY --out {out}` (no --shard) writes the results")
    return trained


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (1-based I, as SLURM array indices are) -> (I, N); anything else is a one-line CaeError."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise CaeError(f"--shard {text!r} is not I/N (this machine's share I of N, 1-based, e.g. 1/4)")
    return check_shard(int(m.group(1)), int(m.group(2)))


def check_shard(index: int, count: int) -> tuple[int, int]:
    if count < 1:
        raise CaeError(f"--shard {index}/{count}: N, the number of shards, must be at least 1")
    if not 1 <= index <= count:
        raise CaeError(f"--shard {index}/{count}: I must be from 1 to {count} (1-based; from a 0-based index "
                       f"such as JOB_COMPLETION_INDEX pass $((INDEX+1))/{count})")
    return index, count


def check_jobs(jobs: int) -> int:
    if not isinstance(jobs, int) or jobs < 1:
        raise CaeError(f"--jobs must be a whole number of processes, at least 1; got {jobs!r}")
    return jobs


def shard_variants(variants: list[Variant], index: int, count: int) -> list[Variant]:
    """Shard `index` of `count` (1-based): every count-th variant, so each shard gets a mix of costs."""
    return [v for k, v in enumerate(variants) if k % count == index - 1]


def _data_once(study: Study) -> Callable[[], Any]:
    """The study's data, loaded on first use only: a sweep whose variants all train in worker
    processes needs it in this process only for the PCA baseline, after the workers are gone."""
    from cae.core.data import load_cifar10

    return functools.cache(lambda: load_cifar10(study.variants[0].cfg.data.dir or None))


def train_variants(study: Study, chosen: list[Variant], out: Path, *, force: bool, jobs: int,
                   data: Callable[[], Any], progress: bool, log: Log) -> list[str]:
    """Train the chosen variants that are not finished (all of them with `force`); their names.

    With jobs > 1, min(jobs, unfinished) worker processes train one variant each at a time.
    A variant that fails does not stop the others; the failures are raised together at the end,
    as one CaeError naming each failed variant.
    """
    for v in chosen:
        _check_finished_matches(v, out / v.name, force)
    number = {v.name: f"{i}/{len(study.variants)}" for i, v in enumerate(study.variants, 1)}
    eta = Eta(jobs=1)
    pending = []
    for v in chosen:
        if runs.is_finished(out / v.name) and not force:
            eta.recorded(v, float(runs.read_json(out / v.name / runs.TEST_METRICS).get("train_seconds", 0.0)))
            log(f"variant {number[v.name]} {v.name}: finished already, skipped (elapsed {eta.elapsed():.0f}s)")
        else:
            pending.append(v)
    eta.left = {v.name: v.cost for v in pending}
    eta.jobs = workers = min(jobs, len(pending)) or 1
    if workers == 1:
        errors = _train_here(pending, out, force, data, progress, log, eta, number)
    else:
        log(f"{len(pending)} variants to train in {workers} worker processes of {threads_per_worker(workers)} "
            "thread(s) each")
        errors = _train_in_workers(pending, out, force, workers, log, eta, number)
    if errors:
        raise CaeError(_failure_line(errors, len(pending)))
    return [v.name for v in pending]


def _failure_line(errors: dict[str, str], tried: int) -> str:
    others = "" if len(errors) == tried else f" ({tried - len(errors)} other(s) finished)"
    return (f"{len(errors)} of {tried} variants failed{others}: "
            + "; ".join(f"{name}: {msg}" for name, msg in errors.items())
            + "; fix it and run the same command again (finished variants are skipped)")


@dataclass
class Eta:
    """The running time estimate: seconds per cost unit (MACs x epochs) as measured, times the
    cost left, spread over the worker processes.

    The measured seconds of a variant trained in a worker are its wall time while the other
    workers shared the machine, so dividing the work left by the number of workers gives wall
    time; the longest variant left bounds it from below (it cannot be split). Seconds recorded
    by an earlier call (skipped variants) are used only until this call has timed a variant.
    """

    jobs: int
    left: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)
    timed: list[float] = field(default_factory=lambda: [0.0, 0.0])  # cost, seconds (this call)
    earlier: list[float] = field(default_factory=lambda: [0.0, 0.0])  # cost, seconds (recorded)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def recorded(self, v: Variant, seconds: float) -> None:
        if seconds > 0:
            self.earlier = [self.earlier[0] + v.cost, self.earlier[1] + seconds]

    def finished(self, v: Variant, seconds: float) -> None:
        self.left.pop(v.name, None)
        self.timed = [self.timed[0] + v.cost, self.timed[1] + seconds]

    def line(self) -> str:
        cost, seconds = self.timed if self.timed[0] else self.earlier
        if not cost:
            return f"elapsed {self.elapsed():.0f}s, estimated remaining unknown until one variant is timed"
        work = max(sum(self.left.values()) / self.jobs, max(self.left.values(), default=0.0))
        return f"elapsed {self.elapsed():.0f}s, estimated remaining {work * seconds / cost:.0f}s"


def _start_line(v: Variant, number: str, eta: Eta) -> str:
    return (f"variant {number} {v.name}: {eta.line()} "
            f"({v.info.macs / 1e6:.2f}M MACs x {v.cfg.train.epochs} epochs)")


def _train_here(pending: list[Variant], out: Path, force: bool, data: Callable[[], Any], progress: bool,
                log: Log, eta: Eta, number: dict[str, str]) -> dict[str, str]:
    """Train the variants one after another in this process; {name: error} of those that failed."""
    from cae import train_run

    errors = {}
    for v in pending:
        log(_start_line(v, number[v.name], eta))
        t0 = time.perf_counter()
        try:
            train_run(v.cfg, out / v.name, force=force, progress=progress, data=data(), log=log)
        except Exception as e:  # noqa: BLE001 - reported with the variant's name once the others ran
            errors[v.name] = _one_line(e, log)
            log(f"variant {number[v.name]} {v.name}: failed: {errors[v.name]}")
            continue
        eta.finished(v, time.perf_counter() - t0)
    return errors


def _one_line(e: BaseException, log: Log) -> str:
    """An error as one line: a CaeError's message; anything else (a bug) also gets its traceback logged."""
    if isinstance(e, CaeError):
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    log("".join(traceback.format_exception(e)).rstrip())
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


# ----------------------------------------------------------------------------- worker processes
# Each worker gets 1/N of the CPUs as torch threads: two 1-thread processes beat one 2-thread
# process for these small convolutions (a few channels, 32x32 images). One layer's work is too
# short for a thread team to split well, much of a step (optimizer, pooling, elementwise ops,
# Python) runs on one thread anyway, and on busy cores a team's threads wait for each other at
# every operation, which one-thread processes never do. docs/sweeps.md has the figures.
STOP_GRACE_SECONDS = 120.0  # how long stopped workers get to unwind and unlock before being killed
MAX_AUTO_JOBS = 8  # default_jobs' cap: every worker holds its own copy of the images and splits


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask (a SLURM or container cpuset) when the OS tells,
    else os.cpu_count(), which counts the whole machine; capped by a container's CPU limit (a
    Kubernetes pod's limit leaves the mask at the whole node)."""
    try:
        cpus = len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return min(cpus, cgroup_cpu_limit(cgroup) or cpus)


def cgroup_cpu_limit(root: Path) -> int | None:
    """The container's CPU limit in whole CPUs, rounded up (cgroup v2 cpu.max, or v1's CFS quota);
    None without a limit or a readable cgroup."""
    try:
        if (root / "cpu.max").is_file():
            quota, period = (root / "cpu.max").read_text().split()[:2]
        else:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        if quota in ("max", "-1"):
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def threads_per_worker(workers: int) -> int:
    return max(1, usable_cpus() // workers)


def default_jobs() -> int:
    """The pipeline's choice: one worker per usable CPU (at most MAX_AUTO_JOBS, each holds its own
    copy of the data), one process on a CUDA machine (the workers would queue for one GPU).
    `train_variants` starts no more workers than there are variants to train."""
    import torch

    if torch.cuda.is_available():
        return 1
    return max(1, min(usable_cpus(), MAX_AUTO_JOBS))



def _train_in_workers(pending: list[Variant], out: Path, force: bool, workers: int, log: Log, eta: Eta,
                      number: dict[str, str]) -> dict[str, str]:
    """Train the variants in `workers` spawned processes; {name: error} of those that failed.

    Any interruption of this process (Ctrl-C, SIGTERM via the CLI) stops the workers the same
    clean way before it propagates: each abandons the epoch under way, releases its run lock and
    exits; finished epochs are kept, and the same command resumes.
    """
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools or locks
    tasks, events = ctx.Queue(), ctx.Queue()
    for v in sorted(pending, key=lambda v: -v.cost):  # longest first: the last to finish is a short one
        tasks.put((v.name, v.cfg, str(out / v.name), force))
    for _ in range(workers):
        tasks.put(None)  # one "no more work" per worker
    procs = [ctx.Process(target=_worker_main, args=(tasks, events, threads_per_worker(workers)),
                         name=f"cae-sweep-{k + 1}", daemon=True) for k in range(workers)]
    for p in procs:
        p.start()
    try:
        return _collect(procs, events, {v.name: v for v in pending}, log, eta, number)
    except BaseException:
        _stop_workers(procs, events, log)
        raise
    finally:
        tasks.cancel_join_thread()  # unread tasks of stopped workers must not block our exit
        for p in procs:
            p.join(timeout=STOP_GRACE_SECONDS)


def _collect(procs: list, events: Any, waiting: dict[str, Variant], log: Log, eta: Eta,
             number: dict[str, str]) -> dict[str, str]:
    """Relay the workers' reports until every variant is done or failed; {name: error}."""
    errors: dict[str, str] = {}
    running: dict[int, str] = {}  # worker pid -> the variant it trains
    while waiting:
        try:
            kind, name, payload = events.get(timeout=1.0)
        except queue.Empty:
            _account_dead_workers(procs, running, waiting, errors, log)
            continue
        v = waiting.get(name)
        if kind == "log":
            log(f"[{name}] {payload}")
        elif kind == "start" and v:
            running[payload] = name
            log(_start_line(v, number[name], eta))
        elif kind == "done" and v:
            eta.finished(waiting.pop(name), payload)
            log(f"variant {number[name]} {name}: trained in {payload:.0f}s ({eta.line()})")
        elif kind in ("error", "stopped") and v:
            errors[name] = payload if kind == "error" else "its worker was stopped (interrupted)"
            waiting.pop(name)
            log(f"variant {number[name]} {name}: failed: {errors[name]}")
    return errors


def _account_dead_workers(procs: list, running: dict[int, str], waiting: dict[str, Variant],
                          errors: dict[str, str], log: Log) -> None:
    """A worker that died without reporting (killed, out of memory) fails its variant; when no
    worker is left, the variants nobody took fail too. Called when no report is pending: a dead
    worker's reports are all delivered (a process flushes its queue before it exits)."""
    for p in procs:
        name = running.get(p.pid)
        if not p.is_alive() and name in waiting:
            errors[name] = f"its worker process died (exit code {p.exitcode})"
            waiting.pop(name)
            log(f"variant {name}: failed: {errors[name]}")
    if waiting and not any(p.is_alive() for p in procs):
        codes = ", ".join(str(p.exitcode) for p in procs)
        for name in list(waiting):
            errors[name] = f"not trained: every worker process had exited (exit codes {codes})"
            waiting.pop(name)


def _stop_workers(procs: list, events: Any, log: Log) -> None:
    """Ask the running workers to stop (SIGTERM, which they turn into KeyboardInterrupt) and wait,
    relaying their last lines; kill those still alive after STOP_GRACE_SECONDS."""
    alive = [p for p in procs if p.is_alive()]
    if alive:
        log(f"stopping {len(alive)} worker process(es); their finished epochs are kept")
    for p in alive:
        try:
            os.kill(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        try:  # keep reading: a worker cannot exit while its reports wait in a full pipe
            kind, name, payload = events.get(timeout=0.2)
            if kind == "log":
                log(f"[{name}] {payload}")
        except queue.Empty:
            pass
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()


def _worker_main(tasks: Any, events: Any, threads: int) -> None:
    """A worker process: set its thread count, then train variants from `tasks` until a None."""
    import torch

    # Ctrl-C in a terminal reaches every process of the group: the parent alone decides, and
    # stops the workers with SIGTERM, which unwinds like Ctrl-C (train_run releases its lock).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    torch.set_num_threads(threads)
    data = None
    try:
        while (task := tasks.get()) is not None:
            data = _worker_train(task, events, data)
    except KeyboardInterrupt:
        pass  # stopped by the parent; it was told which variant, if any, was cut short


def _worker_train(task: tuple, events: Any, data: Any) -> Any:
    """Train one variant in a worker, reporting start, log lines and the outcome; returns the data
    (loaded by the first variant, kept for the next)."""
    from cae import train_run
    from cae.core.data import load_cifar10

    name, cfg, run_dir, force = task
    events.put(("start", name, os.getpid()))
    t0 = time.perf_counter()
    try:
        data = data if data is not None else load_cifar10(cfg.data.dir or None)
        train_run(cfg, run_dir, force=force, progress=False, data=data,
                  log=lambda line: events.put(("log", name, line)))
        events.put(("done", name, time.perf_counter() - t0))
    except KeyboardInterrupt:
        events.put(("stopped", name, None))
        raise
    except Exception as e:  # noqa: BLE001 - reported to the parent with the variant's name
        events.put(("error", name, _one_line(e, lambda text: events.put(("log", name, text)))))
    return data


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _check_finished_matches(v: Variant, run_dir: Path, force: bool) -> None:
    """A finished run trained with other settings (e.g. an earlier --limit) must not be reused silently."""
    if force or not runs.is_finished(run_dir):
        return
    from cae.core.config import differences, load_config

    diff = differences(load_config(run_dir / runs.CONFIG), v.cfg)
    if diff:
        raise CaeError(f"variant {v.name!r}: the finished run {run_dir} was trained with other settings "
                       f"({', '.join(diff)} differ); use another --out, the same flags, or --force to retrain")


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
    return {"name": v.name, "axis": v.axis, "arch": expand(v.arch), "kind": "conv", "note": v.note,
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
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: _cell(r.get(c)) for c in COLUMNS})
    runs.atomic_write_text(out / RESULTS_CSV, buf.getvalue())
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
def write_plots(rows: list[dict], pca: dict[int, dict], out: Path) -> None:
    """mse_vs_latent.png (log-log, labelled points, the PCA line) and mse_vs_params.png."""
    from cae.core.plots import save_figure  # first: it selects the Agg backend

    import matplotlib.pyplot as plt

    conv = [r for r in rows if r["kind"] == "conv"]
    axes_names = sorted({r["axis"] or "-" for r in conv})
    colours = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(axes_names)}
    for x_key, fname, xlabel in (("latent_size", "mse_vs_latent.png", "latent size (values per image)"),
                                 ("params", "mse_vs_params.png", "parameters")):
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for a in axes_names:
            pts = [r for r in conv if (r["axis"] or "-") == a]
            ax.scatter([r[x_key] for r in pts], [r["test_mse"] for r in pts], color=colours[a], label=a, zorder=3)
        for r in conv:
            ax.annotate(r["name"], (r[x_key], r["test_mse"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if x_key == "latent_size":
            line = sorted((k, p["mse"]) for k, p in pca.items() if p["mse"] and p["mse"] > 0)
            ax.plot([k for k, _ in line], [m for _, m in line], "k--", lw=1, label="PCA (same latent size)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test MSE (pixels in [0, 1])")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, title="axis", title_fontsize=7)
        save_figure(fig, out / fname, dpi=120)


# ----------------------------------------------------------------------------- the conclusion's words
# Every word that compares (stronger, lower, about half, better than PCA) is chosen here from the
# numbers; the thresholds below define the words, they are not results.
STRENGTH_WORDS = ((0.7, "strong"), (0.4, "moderate"), (0.1, "weak"))  # |r| at least this, else negligible
SAME_WITHIN = 1.05  # ratios within 5% of 1 read "about the same as"
NAMED_WITHIN = 1.1  # ratios within 10% of 1/3, 1/2, 2, 3 read "about a third of", "about half", ...
NAMED_RATIOS = ((1 / 3, "about a third of"), (0.5, "about half"), (2.0, "about twice"), (3.0, "about three times"))
SMALL_LATENT = 256  # the moonshot: a conv variant beating PCA at a latent size at most this
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
    """A paragraph of conclusions; every number and every comparative word comes from `rows`,
    `corr` and the runs' metrics.csv files under `out`."""
    conv = [r for r in rows if r["kind"] == "conv"]
    ref = reference_row(conv)
    parts = [correlation_sentence(corr, "log latent size", "log test MSE")]
    if isinstance(corr.get("params"), dict):
        parts.append(correlation_sentence(corr["params"], "log parameter count", "log test MSE"))
    parts += [_axis_effects(conv, ref), _pca_comparison(conv), _moonshot(conv), _best_small(conv, ref),
              _limits(conv, corr, ref, out)]
    return " ".join(p for p in parts if p)


def reference_row(conv: list[dict]) -> dict | None:
    """The row the other variants are compared with: axis or name 'reference'."""
    return next((r for r in conv if r["axis"] == "reference" or r["name"] == "reference"), None)


def _axis_effects(conv: list[dict], ref: dict | None) -> str:
    """The axes ranked by their largest effect on test MSE relative to the reference."""
    if ref is None:
        return ""
    effects = []
    for axis in sorted({r["axis"] for r in conv} - {"reference", ""}):
        ratios = sorted((r["test_mse"] / ref["test_mse"], r["name"]) for r in conv if r["axis"] == axis)
        effects.append((max(abs(math.log(q)) for q, _ in ratios), axis, ratios))
    if not effects:
        return ""
    effects.sort(reverse=True)
    ranked = "; ".join(f"{axis} ({', '.join(f'{n} x{q:.2f}' for q, n in ratios)})" for _, axis, ratios in effects)
    _, top_axis, top_ratios = effects[0]
    q, name = max(top_ratios, key=lambda qn: abs(math.log(qn[0])))
    return (f"Relative to the reference (test MSE {ref['test_mse']:.5f}), the axes ranked by their largest "
            f"effect: {ranked}. The largest single change is {name} ({top_axis}), whose test MSE is "
            f"{ratio_words(q)} the reference's.")


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


def _moonshot(conv: list[dict]) -> str:
    """Whether a conv variant beats PCA at a small latent size (at most SMALL_LATENT)."""
    small = [r for r in conv if r["ratio_to_pca"] is not None and r["latent_size"] <= SMALL_LATENT]
    if not small:
        return ""
    sb = min(small, key=lambda r: r["ratio_to_pca"])
    return (f"Moonshot (a conv variant beating PCA at a latent size <= {SMALL_LATENT}): "
            f"{'yes' if sb['ratio_to_pca'] < 1 else 'no'}; the best such ratio is "
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
    """What limits the conv variants: training length, capacity, code use, receptive field."""
    limits = [_training_length(conv, out), _capacity(corr.get("params", {})), _code_use(conv),
              _receptive_field(conv, ref)]
    limits = [text for text in limits if text]
    return "What limits the conv variants: " + "; ".join(limits) + "." if limits else ""


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
