"""`cae bench`: the package's fast training/evaluation path against a naive loop, in one process.

Both paths train the same architecture on the same images in the same run, so the ratio is
meaningful even on a busy machine. The fast path is the package's own code: the data and the
model come from `cae.core.train.prepare` / `make_model` with the `cae.fast` path, the schedule
from `lr_at`, evaluation is `cae.core.train.evaluate`, and each step is `cae.core.train.train_step`
on batches cut from `cae.core.train.epoch_order` exactly as `fit` does (which also validates,
checkpoints and logs). `CAE_FAST=0 cae bench` times the package's loop on the plain model.

The naive reference is what a first PyTorch tutorial would write: the same architecture from
textbook modules (`build_model`: `nn.Upsample` then `nn.Conv2d`, activation before pooling,
none of the fast path's rewrites), a float32 NCHW `TensorDataset` behind a
`DataLoader(batch_size=32, shuffle=True)`, Adam, `nn.MSELoss`, no channels_last, no autocast;
evaluation through a `DataLoader` under `torch.no_grad`.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cae import fast as fast_path
from cae.core import runs
from cae.core.config import RunConfig
from cae.core.data import DEFAULT_CLASSES, Cifar10, load_cifar10, resolve_data_dir
from cae.core.device import cpu_features, describe_cpu, torch_threads
from cae.core.model import build_model
from cae.core.spec import trace
from cae.core.text import Log
from cae.core.train import Prepared, epoch_order, evaluate, lr_at, make_model, make_optimizer, prepare, train_step
from cae.errors import CaeError

try:
    import resource
except ImportError:  # Windows: no peak-memory figure
    resource = None

NAIVE_BATCH = 32
MAX_EVAL_IMAGES = 10_000
PEAK_MATMUL_N = 2048  # 17 GFLOP per product: long enough to time, large enough to reach the peak
ROUNDS = 5  # alternations of the fast and the naive loop
UNSTEADY = 1.3  # rounds of one loop this far apart (fastest / slowest): the machine's speed moved
SYNTHETIC_IMAGES = 60_000  # as many as CIFAR-10, so memory figures are comparable
PROBE_IMAGES = 2_500  # train_step_seconds' images: 2,000 for training, its batches cycling through them


# ----------------------------------------------------------------------------- measuring helpers
def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer read after it measures the work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss: KB on Linux, bytes on macOS);
    NaN where `resource` is missing (Windows)."""
    if resource is None:
        return float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                       repeats: int = 10) -> float:
    """The machine's matmul throughput: best of `repeats` n x n `torch.mm`, in GFLOP/s (2 n^3 FLOP each)."""
    n = n or PEAK_MATMUL_N
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: first call picks kernels and faults in pages
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


# ----------------------------------------------------------------------------- data
def bench_data(data_dir: str | None = None, n_synthetic: int = SYNTHETIC_IMAGES) -> tuple[Cifar10, str]:
    """Real CIFAR-10 when it is found locally, else seeded synthetic uint8 images; and a note saying which.

    Synthetic images are used only when no data folder is found at all: a wrong `--data` or
    `$CAE_DATA_DIR`, or a corrupt file, stays an error. Nothing is downloaded for a benchmark.
    """
    try:
        folder = resolve_data_dir(data_dir, download=False)
    except CaeError:
        if data_dir or os.environ.get("CAE_DATA_DIR"):
            raise
        folder = None
    if folder is not None:
        data = load_cifar10(folder)
        return data, f"CIFAR-10 ({len(data.images):,} images from {folder})"
    note = (f"SYNTHETIC uint8 images ({n_synthetic:,}): no CIFAR-10 found; pass --data or set CAE_DATA_DIR "
            "for real data (the speed is the same, the loss values are meaningless)")
    return synthetic_images(n_synthetic), note


def synthetic_images(n: int) -> Cifar10:
    """`n` seeded random uint8 images in CIFAR-10's shape, ten classes in turn."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return Cifar10(images, torch.arange(n) % 10, DEFAULT_CLASSES, source=Path("<synthetic>"))


def train_step_seconds(cfg: RunConfig, threads: int = 1, steps: int = 6, rounds: int = 5, warmup: int = 5) -> float:
    """Wall seconds of one training step of the run `cfg` (its architecture, batch size and
    precision) on `threads` threads, on synthetic images: for `cae reproduce`, the study's
    reference as one of its workers trains it, the machine's speed for the first time estimate
    (about 2 s with its set-up). The median of `rounds` rounds of `steps` steps, so one slow
    moment does not set it."""
    with torch_threads(threads), torch.random.fork_rng(devices=[]):  # make_model seeds the global generator
        trainer = FastTrainer(prepare(cfg, synthetic_images(PROBE_IMAGES)))
        trainer.run(warmup)
        return statistics.median(trainer.run(steps) / steps for _ in range(rounds))


# ----------------------------------------------------------------------------- the fast path
def _fast_batches(p: Prepared, bs: int) -> Iterator[torch.Tensor]:
    """Batches exactly as `fit` takes them (`cae.core.train.epoch_order`, then contiguous slices)."""
    n = len(p.train)
    per_epoch = n // bs
    epoch = 0
    while True:
        xs = p.train[epoch_order(n, bs, p.cfg.train.seed, epoch).to(p.train.device)]
        for i in range(per_epoch):
            yield xs[i * bs:(i + 1) * bs]
        epoch += 1


class FastTrainer:
    """The package's training loop, advanced `k` steps at a time so it can alternate with the naive one."""

    def __init__(self, p: Prepared):
        cfg, t = p.cfg, p.cfg.train
        self.p = p
        self.model = make_model(cfg, p.task, p.device, fast_path.path())
        self.opt = make_optimizer(cfg, self.model)
        self.batch_size = min(t.batch_size, len(p.train))
        self.total = (len(p.train) // self.batch_size) * t.epochs  # the schedule of a real run
        self.batches = _fast_batches(p, self.batch_size)
        self.step = 0
        self.loss = float("nan")

    def run(self, k: int) -> float:
        """Train `k` steps; the wall seconds they took."""
        p, model = self.p, self.model
        model.train()
        _sync(p.device)
        t0 = time.perf_counter()
        for _ in range(k):
            loss = train_step(p, model, self.opt, next(self.batches), lr_at(self.step % self.total, self.total, p.cfg))
            if p.device.type == "cpu" or self.step % 50 == 0:  # fit reads the loss back this often
                self.loss = loss.item()
            self.step += 1
        _sync(p.device)
        return time.perf_counter() - t0


def time_fast_eval(p: Prepared, model: nn.Module, images: torch.Tensor, full: bool) -> tuple[float, dict]:
    """Seconds of `cae.core.train.evaluate` on `images`, and its metrics."""
    _sync(p.device)
    t0 = time.perf_counter()
    metrics = evaluate(model, images, p.task, p.cfg.train.eval_batch_size, p.amp, full=full)
    _sync(p.device)
    return time.perf_counter() - t0, metrics


# ----------------------------------------------------------------------------- the naive reference
def naive_model(arch: str, seed: int, device: torch.device) -> nn.Module:
    """The same architecture as a tutorial writes it (textbook modules in spec order, no rewrites),
    NCHW float32 on the device; the same initial weights as the package's model."""
    torch.manual_seed(seed)
    return build_model(arch, 3, 3).to(device)


def naive_step(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One step of the tutorial loop: forward, MSE against the input, backward, Adam."""
    opt.zero_grad()
    loss = loss_fn(model(x), x)
    loss.backward()
    opt.step()
    return loss.detach()


def _forever(loader: DataLoader) -> Iterator[torch.Tensor]:
    while True:
        for (xb,) in loader:
            yield xb


class NaiveTrainer:
    """The tutorial loop: float NCHW TensorDataset, DataLoader(batch 32, shuffle), Adam, nn.MSELoss."""

    def __init__(self, images_u8: torch.Tensor, arch: str, lr: float, seed: int, device: torch.device):
        x = images_u8.cpu().contiguous().float() / 255  # the float dataset a tutorial would build (NCHW)
        self.device = device
        self.batches = _forever(DataLoader(TensorDataset(x), batch_size=NAIVE_BATCH, shuffle=True))
        self.model = naive_model(arch, seed, device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.loss_fn = nn.MSELoss()
        self.loss = float("nan")

    def run(self, k: int) -> float:
        """Train `k` steps (the DataLoader's batching included); the wall seconds they took."""
        self.model.train()
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(k):
            xb = next(self.batches).to(self.device)
            self.loss = naive_step(self.model, self.opt, self.loss_fn, xb).item()  # the usual per-step logging
        _sync(self.device)
        return time.perf_counter() - t0


def time_naive_eval(model: nn.Module, images_u8: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """Seconds of a naive evaluation (DataLoader batch 32, torch.no_grad) of `images_u8`, and its MSE."""
    x = images_u8.cpu().contiguous().float() / 255
    loader = DataLoader(TensorDataset(x), batch_size=NAIVE_BATCH)
    model.eval()
    loss_fn = nn.MSELoss(reduction="sum")
    sse = 0.0
    with torch.no_grad():
        _sync(device)
        t0 = time.perf_counter()
        for (xb,) in loader:
            xb = xb.to(device)
            sse += loss_fn(model(xb), xb).item()
        _sync(device)
    return time.perf_counter() - t0, sse / x.numel()


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous (start, stop) ranges covering range(n), none empty."""
    parts = max(1, min(parts, n))
    cuts = [round(i * n / parts) for i in range(parts + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


# ----------------------------------------------------------------------------- the benchmark
@dataclass(frozen=True)
class Workload:
    """What both loops are timed on: a run prepared as `cae train` prepares it, and how much of it."""

    prepared: Prepared
    data_note: str  # which images: real CIFAR-10 (and where from) or synthetic
    steps: int  # timed training steps of each loop
    warmup: int  # untimed steps of each loop before them
    eval_set: torch.Tensor  # held-out images (validation, then test) both evaluations see
    naive_images: int  # training images behind the naive DataLoader
    forward_macs: int  # multiply-adds of one image's forward pass
    precision: str  # 'float32' or the autocast dtype, as printed

    @property
    def train_flop_per_image(self) -> int:
        return 3 * 2 * self.forward_macs  # forward + backward ~ 3x the forward pass


@dataclass(frozen=True)
class TrainingTimes:
    """The timed training of both loops, summed over the rounds, and each round's speeds."""

    fast_seconds: float
    naive_seconds: float
    rounds: list[dict[str, float]]  # images/s of each loop, per round
    rss_mb: float  # peak resident memory after both loops trained


@dataclass(frozen=True)
class EvalTimes:
    """The timed evaluations of the held-out images, and the fast path's metrics on them."""

    fast_seconds: float  # MSE only (`full=False`)
    full_seconds: float  # MSE, PSNR and SSIM
    naive_seconds: float
    mse: float
    ssim: float


@dataclass(frozen=True)
class MachineReadings:
    """What the machine could do and how busy it was, read around the timed work."""

    peak_gflops: float  # float32 matmul
    peak_amp_gflops: float | None  # in the autocast dtype, when there is one
    load_before: float  # 1-minute load average
    load_after: float


def run_bench(steps: int = 200, data_dir: str | None = None, json_path: str | None = None,
              batch_size: int | None = None, log: Log = print, *, eval_images: int | None = None,
              precision: str = "auto", arch: str = "reference", limit: int = 0,
              n_synthetic: int = SYNTHETIC_IMAGES) -> dict:
    """Time the package's fast training and evaluation against a naive loop; print a table.

    `steps` timed training steps for each path (plus a few untimed warm-up steps) at the
    `RunConfig` defaults (batch size, precision 'auto', channels_last); evaluation on
    `eval_images` held-out images (default: 50 per step, at most 10,000). Returns the figures
    and writes them to `json_path` if given. `precision`, `arch`, `limit` and `n_synthetic`
    are for tests and experiments (not on the CLI).
    """
    if steps < 1:
        raise CaeError(f"--steps must be at least 1, got {steps}")
    cfg = bench_config(arch, precision, batch_size, limit)
    work = prepare_workload(cfg, steps, data_dir, eval_images, n_synthetic)
    _log_header(work, log)
    load_before = os.getloadavg()[0]
    peak, peak_amp = _matmul_peaks(work.prepared)
    fast = FastTrainer(work.prepared)
    naive = NaiveTrainer(work.prepared.train[:work.naive_images], cfg.arch, cfg.train.lr, cfg.train.seed,
                         work.prepared.device)
    training = time_training(fast, naive, steps, work.warmup, log)
    evaluation = time_evaluation(work, fast.model, naive.model)
    machine = MachineReadings(peak, peak_amp, load_before, os.getloadavg()[0])
    figures = bench_figures(work, fast, naive, training, evaluation, machine)
    _print_table(figures, log)
    if json_path:
        runs.write_json(json_path, figures)
        log(f"wrote {json_path}")
    return figures


# ----------------------------------------------------------------------------- setup
def bench_config(arch: str, precision: str, batch_size: int | None, limit: int) -> RunConfig:
    """The `RunConfig` defaults with the benchmark's overrides, validated."""
    cfg = RunConfig(arch=arch)
    cfg.data.limit = limit
    cfg.train.precision = precision
    if batch_size is not None:
        cfg.train.batch_size = batch_size
    return cfg.validate()


def prepare_workload(cfg: RunConfig, steps: int, data_dir: str | None, eval_images: int | None,
                     n_synthetic: int) -> Workload:
    """Load the images and prepare them as a training run does (device, precision, splits)."""
    data, note = bench_data(data_dir, n_synthetic)
    p = prepare(cfg, data)  # resolves the device and the precision exactly as a training run does
    del data  # prepare keeps its own copies of the splits, as in a run
    warmup = max(1, min(20, steps // 10))
    held_out = torch.cat([p.val, p.test])
    wanted = eval_images if eval_images is not None else min(MAX_EVAL_IMAGES, 50 * steps)
    naive_images = min(len(p.train), (warmup + steps) * NAIVE_BATCH)  # one pass is enough; keeps RSS honest
    info = trace(cfg.arch, (p.task.in_channels, 32, 32), p.task.out_channels)
    precision = str(p.amp).replace("torch.", "") if p.amp else "float32"
    return Workload(p, note, steps, warmup, held_out[:min(len(held_out), wanted)], naive_images, info.macs,
                    precision)


def _log_header(work: Workload, log: Log) -> None:
    """What is about to be timed, on what, with which images."""
    cfg, device = work.prepared.cfg, work.prepared.device
    log(f"cae bench: {cfg.arch} on {device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {cfg.train.batch_size}, precision {work.precision}; {work.steps} timed steps after "
        f"{work.warmup} warm-up")
    log(f"cpu: {describe_cpu()}")
    log(f"data: {work.data_note}")


def _matmul_peaks(p: Prepared) -> tuple[float, float | None]:
    """The matmul peak in float32 and, when the run autocasts, in its dtype."""
    peak = matmul_peak_gflops(p.device)
    peak_amp = matmul_peak_gflops(p.device, p.amp) if p.amp is not None else None
    return peak, peak_amp


# ----------------------------------------------------------------------------- timing
def time_training(fast: FastTrainer, naive: NaiveTrainer, steps: int, warmup: int, log: Log) -> TrainingTimes:
    """`warmup` untimed steps of each loop, then `steps` timed steps of each in alternating rounds.

    Alternating rounds make a load change on a shared machine hit both loops alike; warm-up
    steps (kernel selection, the allocator, the first DataLoader batch) are not timed.
    """
    fast.run(warmup)
    naive.run(warmup)
    fast_seconds = naive_seconds = 0.0
    rounds = _chunks(steps, ROUNDS)
    per_round: list[dict[str, float]] = []
    for i, (start, stop) in enumerate(rounds, 1):
        k = stop - start
        fast_round, naive_round = fast.run(k), naive.run(k)
        fast_seconds, naive_seconds = fast_seconds + fast_round, naive_seconds + naive_round
        per_round.append({"cae": k * fast.batch_size / fast_round, "naive": k * NAIVE_BATCH / naive_round})
        log(f"  training round {i}/{len(rounds)}: cae {per_round[-1]['cae']:,.0f} images/s, "
            f"naive {per_round[-1]['naive']:,.0f} images/s")
    return TrainingTimes(fast_seconds, naive_seconds, per_round, peak_rss_mb())


def time_evaluation(work: Workload, fast_net: nn.Module, naive_net: nn.Module) -> EvalTimes:
    """Both evaluations of `work.eval_set`, alternating in rounds after an untimed warm-up of each."""
    p, images = work.prepared, work.eval_set
    time_fast_eval(p, fast_net, images[:p.cfg.train.eval_batch_size], full=True)
    time_naive_eval(naive_net, images[:NAIVE_BATCH], p.device)
    fast_seconds = full_seconds = naive_seconds = 0.0
    mse_sum = ssim_sum = 0.0  # weighted by the round's images, so the means are over all of them
    for start, stop in _chunks(len(images), ROUNDS):
        part = images[start:stop]
        seconds, metrics = time_fast_eval(p, fast_net, part, full=False)
        fast_seconds += seconds
        mse_sum += metrics["mse"] * (stop - start)
        seconds, metrics = time_fast_eval(p, fast_net, part, full=True)
        full_seconds += seconds
        ssim_sum += metrics["ssim"] * (stop - start)
        naive_seconds += time_naive_eval(naive_net, part, p.device)[0]
    n = len(images)
    return EvalTimes(fast_seconds, full_seconds, naive_seconds, mse_sum / n, ssim_sum / n)


# ----------------------------------------------------------------------------- figures
def bench_figures(work: Workload, fast: FastTrainer, naive: NaiveTrainer, training: TrainingTimes,
                  evaluation: EvalTimes, machine: MachineReadings) -> dict:
    """Every figure of the benchmark, as `run_bench` returns it and writes it to JSON."""
    return {**_speed_figures(work, fast.batch_size, training, evaluation, machine),
            **_run_figures(work, fast, naive, training, evaluation),
            **_machine_figures(work.prepared.device, machine)}


def _speed_figures(work: Workload, batch_size: int, training: TrainingTimes, evaluation: EvalTimes,
                   machine: MachineReadings) -> dict:
    """Images per second of both loops, their ratios, and the training's share of the matmul peak."""
    train_ips = work.steps * batch_size / training.fast_seconds
    naive_ips = work.steps * NAIVE_BATCH / training.naive_seconds
    n_eval = len(work.eval_set)
    achieved = train_ips * work.train_flop_per_image / 1e9
    return {
        "train_images_per_s": train_ips,
        "naive_train_images_per_s": naive_ips,
        "train_speedup": train_ips / naive_ips,
        # robust to a load spike in one round (the total-time ratio above is not)
        "train_speedup_median": statistics.median(r["cae"] / r["naive"] for r in training.rounds),
        "train_rounds": training.rounds,
        "train_rounds_spread": round_spread(training.rounds),
        "eval_images_per_s": n_eval / evaluation.fast_seconds,
        "naive_eval_images_per_s": n_eval / evaluation.naive_seconds,
        "eval_speedup": (n_eval / evaluation.fast_seconds) / (n_eval / evaluation.naive_seconds),
        "eval_full_images_per_s": n_eval / evaluation.full_seconds,
        "train_gflops": achieved,
        "peak_gflops": machine.peak_gflops,
        "peak_fraction": achieved / machine.peak_gflops,
        "peak_amp_gflops": machine.peak_amp_gflops,
    }


def round_spread(rounds: list[dict[str, float]]) -> float:
    """The widest spread of one loop's speed over the rounds: fastest round / slowest round."""
    return max(max(r[k] for r in rounds) / min(r[k] for r in rounds) for k in ("cae", "naive"))


def _run_figures(work: Workload, fast: FastTrainer, naive: NaiveTrainer, training: TrainingTimes,
                 evaluation: EvalTimes) -> dict:
    """What was timed (sizes, precision, data), the memory it took, and the losses it reached."""
    return {
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_training_mb": training.rss_mb,
        "train_flop_per_image": work.train_flop_per_image,
        "forward_macs_per_image": work.forward_macs,
        "batch_size": fast.batch_size,
        "naive_batch_size": NAIVE_BATCH,
        "precision": work.precision,
        "fast_path": fast_path.enabled(),
        "arch": work.prepared.cfg.arch,
        "steps": work.steps,
        "warmup_steps": work.warmup,
        "eval_images": len(work.eval_set),
        "naive_train_images": work.naive_images,
        "data": work.data_note,
        "synthetic": work.data_note.startswith("SYNTHETIC"),
        "train_loss_last": fast.loss,
        "naive_train_loss_last": naive.loss,
        "eval_mse": evaluation.mse,
        "eval_ssim": evaluation.ssim,
    }


def _machine_figures(device: torch.device, machine: MachineReadings) -> dict:
    """The machine and software the figures were measured on, and its load around them."""
    return {
        **{f"cpu_{k}": v for k, v in cpu_features().items()},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else describe_cpu(),
        "load_average_before": machine.load_before,
        "load_average_after": machine.load_after,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


# ----------------------------------------------------------------------------- printing
def _print_table(r: dict, log: Log) -> None:
    """The figures as a table: both loops side by side, then the peak, memory and load lines."""
    log(f"{'':24}{'cae':>14}{'naive':>14}{'ratio':>10}")  # cae's loop, fast path on or off
    log(f"{'train images/s':24}{r['train_images_per_s']:>14,.0f}{r['naive_train_images_per_s']:>14,.0f}"
        f"{r['train_speedup']:>9.2f}x")
    log(f"{'  median of the rounds':24}{'':>14}{'':>14}{r['train_speedup_median']:>9.2f}x")
    if r["train_rounds_spread"] > UNSTEADY:
        log(f"  warning: a loop's rounds ran {r['train_rounds_spread']:.1f}x apart: the machine's speed changed "
            "while it was timed, so the ratio is unreliable; run again when the machine is quiet")
    log(f"{'eval images/s (MSE)':24}{r['eval_images_per_s']:>14,.0f}{r['naive_eval_images_per_s']:>14,.0f}"
        f"{r['eval_speedup']:>9.2f}x")
    log(f"{'eval images/s (all)':24}{r['eval_full_images_per_s']:>14,.0f}{'':>14}{'':>10}  (MSE, PSNR, SSIM)")
    amp = f", {r['precision']} matmul {r['peak_amp_gflops']:,.0f} GFLOP/s" if r["peak_amp_gflops"] else ""
    log(f"matmul peak (fp32)      {r['peak_gflops']:,.0f} GFLOP/s{amp}")
    log(f"training achieves       {r['train_gflops']:,.1f} GFLOP/s = {100 * r['peak_fraction']:.1f}% of the fp32 peak "
        f"({r['train_flop_per_image'] / 1e6:.1f} MFLOP per image)")
    log(f"fast path               {'on' if r['fast_path'] else 'off (CAE_FAST=0: the plain model)'}")
    log(f"peak RSS                {r['peak_rss_mb']:,.0f} MB "
        f"(after both training loops: {r['rss_after_training_mb']:,.0f} MB)")
    log(f"load average            {r['load_average_before']:.1f} before, {r['load_average_after']:.1f} after "
        f"({r['cpu_count']} CPUs): figures from a busy machine are low, the ratios less affected")


__all__ = ["run_bench", "bench_data", "naive_step", "naive_model", "FastTrainer", "NaiveTrainer",
           "matmul_peak_gflops", "peak_rss_mb"]
