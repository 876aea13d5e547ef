"""Running a study's variants (`cae sweep`): in this process, in worker processes, or as one
share of a cluster's sweep; then the study's results (`cae.experiments.study.write_results`).

Every variant is an ordinary run folder (`cae train` format), so finished ones are skipped and
an interrupted one resumes. `--jobs N` trains N variants at once, each in a spawned process
with 1/N of the CPU threads; `--shard I/N` trains every N-th variant into a shared folder for a
cluster's scheduler, and a final plain sweep merges (docs/sweeps.md).
"""

from __future__ import annotations

import copy
import functools
import math
import multiprocessing
import os
import queue
import re
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from cae.core import runs
from cae.core.config import RunConfig
from cae.core.data import resolve_data_dir
from cae.core.device import torch_threads
from cae.core.spec import trace
from cae.core.text import Log, first_line
from cae.errors import CaeError
from cae.experiments.frontier import WINNER_MAX_LATENT, WINNER_SEEDS, best_model, group_models
from cae.experiments.study import STUDY_COPY, Study, Variant, load_study, pca_results, variant_row, write_results


def run_sweep(study_path: str | Path, out: str | Path, epochs: int | None = None, limit: int | None = None,
              data_dir: str | None = None, force: bool = False, *, jobs: int = 1, progress: bool = True,
              log: Log = print, also: Sequence[tuple[str, RunConfig, Path]] = ()) -> list[dict]:
    """Train every variant of a study into OUT/<name>/, then write the comparison; returns its rows.

    Finished variants are skipped (unless `force`), an interrupted one resumes. The variants are
    all validated first, so a typo in the last one does not surface after an hour of training.
    `jobs` > 1 trains that many variants at once, each in its own process (see `train_variants`);
    the processes are spawned, so a script calling this needs the `if __name__ == "__main__":`
    guard. The study folder is locked for the whole call: it alone writes study.toml and results.
    `also`: other runs (name, config, run folder) trained by the same workers, longest first among
    the variants, so that no worker idles while the last long variant finishes (`cae reproduce`
    trains its colorization runs so); they take no part in the results. With workers, the PCA
    baseline is fitted on the core the first worker out of runs leaves, while the last ones train.
    """
    study = load_study(study_path, epochs, limit, data_dir)
    out = Path(out)
    check_jobs(jobs)
    # found (or downloaded) once, here: not once per worker, each failing alike without a network
    resolve_data_dir(study.variants[0].cfg.data.dir or None)
    with runs.RunLock(out):
        runs.atomic_write_text(out / STUDY_COPY, study.text)
        n = len(study.variants)
        total_macs = sum(v.info.macs for v in study.variants)
        log(f"study {study.title}: {n} variants, {total_macs / 1e6:.1f}M multiply-adds per image in all -> {out}")
        data = _data_once(study)
        start = time.perf_counter()
        pooled = [Job(name, f"run {name}", cfg, Path(run_dir), trace(cfg.arch).macs) for name, cfg, run_dir in also]
        pca_stale = force  # whether OUT/pca.json is still to be (re)computed

        def pca_on_the_idle_core() -> None:
            nonlocal pca_stale
            pca_results(study, out, data(), pca_stale, log)
            pca_stale = False

        trained = train_variants(study, study.variants, out, force=force, jobs=jobs, data=data, progress=progress,
                                 log=log, also=pooled, when_idle=pca_on_the_idle_core)
        if study.analysis == "frontier":
            extra = winner_seeds(study, out, data(), pca_stale, log)  # computes the PCA baseline
            pca_stale = False
            trained += train_variants(study, extra, out, force=force, jobs=jobs, data=data, progress=progress, log=log)
        log(f"all {len(study.variants)} variants finished ({len(trained)} trained now, in "
            f"{time.perf_counter() - start:.0f}s); "
            "PCA baseline and results next")
        return write_results(study, out, data(), force=pca_stale, log=log)


def winner_seeds(study: Study, out: Path, data: Any, force: bool, log: Log) -> list[Variant]:
    """A frontier study's extra runs: the run that beats PCA by most (`frontier.best_model`) again
    with the next WINNER_SEEDS - 1 seeds, added to `study.variants` (none when nothing wins)."""
    pca = pca_results(study, out, data, force, log)
    name = best_model(group_models([variant_row(v, out / v.name, pca) for v in study.variants]), pca)
    if name is None:
        log(f"no run beats PCA at a latent size up to {WINNER_MAX_LATENT}: no extra seeds")
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


@dataclass(frozen=True)
class Job:
    """One run for `train_variants`: its name, how the log calls it, its config, folder and size."""

    name: str
    label: str  # "variant 3/19 kernel-7", or "run colorize/best" for a run that is not a variant
    cfg: RunConfig
    run_dir: Path
    macs: int

    @property
    def cost(self) -> float:
        """Relative training cost, as `Variant.cost`: multiply-adds per image times epochs."""
        return float(self.macs) * self.cfg.train.epochs


def train_variants(study: Study, chosen: list[Variant], out: Path, *, force: bool, jobs: int,
                   data: Callable[[], Any], progress: bool, log: Log, also: Sequence[Job] = (),
                   when_idle: Callable[[], None] | None = None) -> list[str]:
    """Train the chosen variants (and the runs `also`) that are not finished (all of them with
    `force`); their names.

    With jobs > 1, min(jobs, unfinished) worker processes train one run each at a time; once
    every run has started and a worker has exited, this process calls `when_idle` on one thread,
    on the core that worker freed (a failure there is logged, not raised: the caller redoes it).
    A run that fails does not stop the others; the failures are raised together at the end,
    as one CaeError naming each failed run.
    """
    index = {v.name: i for i, v in enumerate(study.variants, 1)}
    todo = [Job(v.name, f"variant {index[v.name]}/{len(study.variants)} {v.name}", v.cfg, out / v.name, v.info.macs)
            for v in chosen] + list(also)
    for job in todo:
        _check_finished_matches(job, force)
    eta = Eta(jobs=1)
    pending = []
    for job in todo:
        if runs.is_finished(job.run_dir) and not force:
            eta.recorded(job, float(runs.read_json(job.run_dir / runs.TEST_METRICS).get("train_seconds", 0.0)))
            log(f"{job.label}: finished already, skipped (elapsed {eta.elapsed():.0f}s)")
        else:
            pending.append(job)
    eta.left = {job.name: job.cost for job in pending}
    eta.jobs = workers = min(jobs, len(pending)) or 1
    if workers == 1:
        errors = _train_here(pending, force, data, progress, log, eta)
    else:
        log(f"{len(pending)} runs to train in {workers} worker processes of {threads_per_worker(workers)} "
            "thread(s) each")
        errors = _train_in_workers(pending, force, workers, log, eta, when_idle)
    if errors:
        raise CaeError(_failure_line(errors, len(pending)))
    return [job.name for job in pending]


def _failure_line(errors: dict[str, str], tried: int) -> str:
    others = "" if len(errors) == tried else f" ({tried - len(errors)} other(s) finished)"
    return (f"{len(errors)} of {tried} runs failed{others}: "
            + "; ".join(f"{name}: {msg}" for name, msg in errors.items())
            + "; fix it and run the same command again (finished runs are skipped)")


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

    def recorded(self, v: Job, seconds: float) -> None:
        if seconds > 0:
            self.earlier = [self.earlier[0] + v.cost, self.earlier[1] + seconds]

    def finished(self, v: Job, seconds: float) -> None:
        self.left.pop(v.name, None)
        self.timed = [self.timed[0] + v.cost, self.timed[1] + seconds]

    def line(self) -> str:
        cost, seconds = self.timed if self.timed[0] else self.earlier
        if not cost:
            return f"elapsed {self.elapsed():.0f}s, estimated remaining unknown until one variant is timed"
        work = max(sum(self.left.values()) / self.jobs, max(self.left.values(), default=0.0))
        return f"elapsed {self.elapsed():.0f}s, estimated remaining {work * seconds / cost:.0f}s"


def _start_line(job: Job, eta: Eta) -> str:
    return f"{job.label}: {eta.line()} ({job.macs / 1e6:.2f}M MACs x {job.cfg.train.epochs} epochs)"


def _train_here(pending: list[Job], force: bool, data: Callable[[], Any], progress: bool, log: Log,
                eta: Eta) -> dict[str, str]:
    """Train the runs one after another in this process; {name: error} of those that failed."""
    from cae import train_run

    errors = {}
    for job in pending:
        log(_start_line(job, eta))
        t0 = time.perf_counter()
        try:
            train_run(job.cfg, job.run_dir, force=force, progress=progress, data=data(), log=log)
        except Exception as e:  # noqa: BLE001 - reported with the run's name once the others ran
            errors[job.name] = _one_line(e, log)
            log(f"{job.label}: failed: {errors[job.name]}")
            continue
        eta.finished(job, time.perf_counter() - t0)
    return errors


def _one_line(e: BaseException, log: Log) -> str:
    """An error as one line: a CaeError's message; anything else (a bug) also gets its traceback logged."""
    if isinstance(e, CaeError):
        return first_line(e)
    log("".join(traceback.format_exception(e)).rstrip())
    return f"{type(e).__name__}: {first_line(e)}" if str(e) else type(e).__name__


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



def _train_in_workers(pending: list[Job], force: bool, workers: int, log: Log, eta: Eta,
                      when_idle: Callable[[], None] | None = None) -> dict[str, str]:
    """Train the runs in `workers` spawned processes; {name: error} of those that failed.

    Any interruption of this process (Ctrl-C, SIGTERM via the CLI) stops the workers the same
    clean way before it propagates: each abandons the epoch under way, releases its run lock and
    exits; finished epochs are kept, and the same command resumes.
    """
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools or locks
    tasks, events = ctx.Queue(), ctx.Queue()
    for job in sorted(pending, key=lambda job: -job.cost):  # longest first: the last to finish is a short one
        tasks.put((job.name, job.cfg, str(job.run_dir), force))
    for _ in range(workers):
        tasks.put(None)  # one "no more work" per worker
    procs = [ctx.Process(target=_worker_main, args=(tasks, events, threads_per_worker(workers)),
                         name=f"cae-sweep-{k + 1}", daemon=True) for k in range(workers)]
    for p in procs:
        p.start()
    try:
        return _collect(procs, events, {job.name: job for job in pending}, log, eta, when_idle)
    except BaseException:
        _stop_workers(procs, events, log)
        raise
    finally:
        tasks.cancel_join_thread()  # unread tasks of stopped workers must not block our exit
        for p in procs:
            p.join(timeout=STOP_GRACE_SECONDS)


def _collect(procs: list, events: Any, waiting: dict[str, Job], log: Log, eta: Eta,
             when_idle: Callable[[], None] | None = None) -> dict[str, str]:
    """Relay the workers' reports until every variant is done or failed; {name: error}.
    `when_idle` runs once a worker has nothing left to take (the reports wait meanwhile)."""
    errors: dict[str, str] = {}
    running: dict[int, str] = {}  # worker pid -> the variant it trains
    while waiting:
        if when_idle and len(waiting) < len(procs) and set(waiting) <= set(running.values()):
            _run_on_one_thread(when_idle, log)
            when_idle = None
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
            log(_start_line(v, eta))
        elif kind == "done" and v:
            eta.finished(waiting.pop(name), payload)
            log(f"{v.label}: trained in {payload:.0f}s ({eta.line()})")
        elif kind in ("error", "stopped") and v:
            errors[name] = payload if kind == "error" else "its worker was stopped (interrupted)"
            waiting.pop(name)
            log(f"{v.label}: failed: {errors[name]}")
    return errors


def _run_on_one_thread(work: Callable[[], None], log: Log) -> None:
    """`work()` with this process's torch on one thread (the workers still busy keep theirs)."""
    try:
        with torch_threads(1):
            work()
    except Exception as e:  # noqa: BLE001 - a failure here must not stop the workers' runs
        log(f"work for the idle core failed, done after the runs instead: {type(e).__name__}: {e}")


def _account_dead_workers(procs: list, running: dict[int, str], waiting: dict[str, Job],
                          errors: dict[str, str], log: Log) -> None:
    """A worker that died without reporting (killed, out of memory) fails its variant; when no
    worker is left, the variants nobody took fail too. Called when no report is pending: a dead
    worker's reports are all delivered (a process flushes its queue before it exits)."""
    for p in procs:
        name = running.get(p.pid)
        if not p.is_alive() and name in waiting:
            errors[name] = f"its worker process died (exit code {p.exitcode})"
            log(f"{waiting.pop(name).label}: failed: {errors[name]}")
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


def _check_finished_matches(job: Job, force: bool) -> None:
    """A finished run trained with other settings (e.g. an earlier --limit) must not be reused silently."""
    if force or not runs.is_finished(job.run_dir):
        return
    from cae.core.config import differences, load_config

    diff = differences(load_config(job.run_dir / runs.CONFIG), job.cfg)
    if diff:
        raise CaeError(f"{job.label}: the finished run {job.run_dir} was trained with other settings "
                       f"({', '.join(diff)} differ); use another --out, the same flags, or --force to retrain")
