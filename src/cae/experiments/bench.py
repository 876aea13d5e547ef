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
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cae import fast as fast_path
from cae.core import runs
from cae.core.config import RunConfig
from cae.core.data import DEFAULT_CLASSES, Cifar10, load_cifar10, resolve_data_dir
from cae.core.device import cpu_features, describe_cpu
from cae.core.model import build_model
from cae.core.spec import trace
from cae.core.text import Log
from cae.core.train import Prepared, epoch_order, evaluate, lr_at, make_model, make_optimizer, prepare, train_step
from cae.errors import CaeError

NAIVE_BATCH = 32
MAX_EVAL_IMAGES = 10_000
PEAK_MATMUL_N = 2048  # 17 GFLOP per product: long enough to time, large enough to reach the peak
ROUNDS = 5  # alternations of the fast and the naive loop
SYNTHETIC_IMAGES = 60_000  # as many as CIFAR-10, so memory figures are comparable


# ----------------------------------------------------------------------------- measuring helpers
def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer read after it measures the work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss: KB on Linux, bytes on macOS)."""
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
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_synthetic, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(n_synthetic) % 10
    note = (f"SYNTHETIC uint8 images ({n_synthetic:,}): no CIFAR-10 found; pass --data or set CAE_DATA_DIR "
            "for real data (the speed is the same, the loss values are meaningless)")
    return Cifar10(images, labels, DEFAULT_CLASSES, source=Path("<synthetic>")), note


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
    cfg = RunConfig(arch=arch)
    cfg.data.limit = limit
    cfg.train.precision = precision
    if batch_size is not None:
        cfg.train.batch_size = batch_size
    cfg.validate()
    warmup = max(1, min(20, steps // 10))
    data, note = bench_data(data_dir, n_synthetic)
    p = prepare(cfg, data)  # resolves the device and the precision exactly as a training run does
    del data  # prepare keeps its own copies of the splits, as in a run
    held_out = torch.cat([p.val, p.test])
    n_eval = min(len(held_out), eval_images if eval_images is not None else min(MAX_EVAL_IMAGES, 50 * steps))
    eval_set = held_out[:n_eval]
    naive_n = min(len(p.train), (warmup + steps) * NAIVE_BATCH)  # one pass is enough; keeps RSS honest
    device = p.device
    info = trace(cfg.arch, (p.task.in_channels, 32, 32), p.task.out_channels)
    flop_per_image = 3 * 2 * info.macs  # forward + backward ~ 3x the forward pass
    precision_name = str(p.amp).replace("torch.", "") if p.amp else "float32"
    log(f"cae bench: {cfg.arch} on {device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {cfg.train.batch_size}, precision {precision_name}; {steps} timed steps after {warmup} warm-up")
    log(f"cpu: {describe_cpu()}")
    log(f"data: {note}")

    load_before = os.getloadavg()
    peak = matmul_peak_gflops(device)
    peak_amp = matmul_peak_gflops(device, p.amp) if p.amp is not None else None

    # Both loops advance in alternating rounds, so a load change on a shared machine hits
    # both alike; warm-up steps (kernel selection, allocator, first DataLoader batch) are untimed.
    fast = FastTrainer(p)
    naive = NaiveTrainer(p.train[:naive_n], cfg.arch, cfg.train.lr, cfg.train.seed, device)
    fast.run(warmup)
    naive.run(warmup)
    train_s = naive_s = 0.0
    rounds = _chunks(steps, ROUNDS)
    per_round: list[dict[str, float]] = []
    for i, (a, b) in enumerate(rounds):
        f, n = fast.run(b - a), naive.run(b - a)
        train_s, naive_s = train_s + f, naive_s + n
        per_round.append({"cae": (b - a) * fast.batch_size / f, "naive": (b - a) * NAIVE_BATCH / n})
        log(f"  training round {i + 1}/{len(rounds)}: cae {per_round[-1]['cae']:,.0f} images/s, "
            f"naive {per_round[-1]['naive']:,.0f} images/s")
    rss_train = peak_rss_mb()

    # evaluation, alternating in rounds too, after an untimed warm-up of each
    model, nmodel = fast.model, naive.model
    time_fast_eval(p, model, eval_set[:p.cfg.train.eval_batch_size], full=True)
    time_naive_eval(nmodel, eval_set[:NAIVE_BATCH], device)
    eval_s = full_s = naive_eval_s = 0.0
    sums = {"mse": 0.0, "ssim": 0.0}
    for a, b in _chunks(n_eval, ROUNDS):
        s, m = time_fast_eval(p, model, eval_set[a:b], full=False)
        eval_s += s
        sums["mse"] += m["mse"] * (b - a)
        s, m = time_fast_eval(p, model, eval_set[a:b], full=True)
        full_s += s
        sums["ssim"] += m["ssim"] * (b - a)
        naive_eval_s += time_naive_eval(nmodel, eval_set[a:b], device)[0]
    load_after = os.getloadavg()

    bs = fast.batch_size
    train_ips = steps * bs / train_s
    naive_ips = steps * NAIVE_BATCH / naive_s
    achieved = train_ips * flop_per_image / 1e9
    r = {
        "train_images_per_s": train_ips,
        "naive_train_images_per_s": naive_ips,
        "train_speedup": train_ips / naive_ips,
        # robust to a load spike in one round (the total-time ratio above is not)
        "train_speedup_median": statistics.median(r["cae"] / r["naive"] for r in per_round),
        "train_rounds": per_round,
        "eval_images_per_s": n_eval / eval_s,
        "naive_eval_images_per_s": n_eval / naive_eval_s,
        "eval_speedup": (n_eval / eval_s) / (n_eval / naive_eval_s),
        "eval_full_images_per_s": n_eval / full_s,
        "train_gflops": achieved,
        "peak_gflops": peak,
        "peak_fraction": achieved / peak,
        "peak_amp_gflops": peak_amp,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_training_mb": rss_train,
        "train_flop_per_image": flop_per_image,
        "forward_macs_per_image": info.macs,
        "batch_size": bs,
        "naive_batch_size": NAIVE_BATCH,
        "precision": precision_name,
        "fast_path": fast_path.enabled(), **{f"cpu_{k}": v for k, v in cpu_features().items()},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else describe_cpu(),
        "arch": cfg.arch,
        "steps": steps,
        "warmup_steps": warmup,
        "eval_images": n_eval,
        "naive_train_images": naive_n,
        "data": note,
        "synthetic": note.startswith("SYNTHETIC"),
        "train_loss_last": fast.loss,
        "naive_train_loss_last": naive.loss,
        "eval_mse": sums["mse"] / n_eval,
        "eval_ssim": sums["ssim"] / n_eval,
        "load_average_before": load_before[0],
        "load_average_after": load_after[0],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    _table(r, log)
    if json_path:
        runs.write_json(json_path, r)
        log(f"wrote {json_path}")
    return r


def _table(r: dict, log: Log) -> None:
    log(f"{'':24}{'cae (fast)':>14}{'naive':>14}{'ratio':>10}")
    log(f"{'train images/s':24}{r['train_images_per_s']:>14,.0f}{r['naive_train_images_per_s']:>14,.0f}"
        f"{r['train_speedup']:>9.2f}x")
    log(f"{'  median of the rounds':24}{'':>14}{'':>14}{r['train_speedup_median']:>9.2f}x")
    log(f"{'eval images/s (MSE)':24}{r['eval_images_per_s']:>14,.0f}{r['naive_eval_images_per_s']:>14,.0f}"
        f"{r['eval_speedup']:>9.2f}x")
    log(f"{'eval images/s (all)':24}{r['eval_full_images_per_s']:>14,.0f}{'':>14}{'':>10}  (MSE, PSNR, SSIM)")
    amp = f", {r['precision']} matmul {r['peak_amp_gflops']:,.0f} GFLOP/s" if r["peak_amp_gflops"] else ""
    log(f"matmul peak (fp32)      {r['peak_gflops']:,.0f} GFLOP/s{amp}")
    log(f"training achieves       {r['train_gflops']:,.1f} GFLOP/s = {100 * r['peak_fraction']:.1f}% of the fp32 peak "
        f"({r['train_flop_per_image'] / 1e6:.1f} MFLOP per image)")
    log(f"fast path               {'on' if r['fast_path'] else 'off (CAE_FAST=0: the plain model)'}")
    log(f"peak RSS                {r['peak_rss_mb']:,.0f} MB (after both training loops: {r['rss_after_training_mb']:,.0f} MB)")
    log(f"load average            {r['load_average_before']:.1f} before, {r['load_average_after']:.1f} after "
        f"({r['cpu_count']} CPUs): figures from a busy machine are low, the ratios less affected")


__all__ = ["run_bench", "bench_data", "naive_step", "naive_model", "FastTrainer", "NaiveTrainer",
           "matmul_peak_gflops",
           "peak_rss_mb"]
