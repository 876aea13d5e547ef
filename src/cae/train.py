"""Training and evaluation: a fit loop you can read top to bottom.

Fast by design (airbench habits): the split's images live on the device as one uint8 tensor;
each epoch does one shuffle (a single gather) and then takes contiguous slices; batches are
converted to float and channels_last only when taken; Adam is one fused kernel; evaluation
runs under `torch.inference_mode()`; bf16 autocast is used where the CPU or GPU runs it natively
(the loss and all metrics stay float32); docs/performance.md has the measurements.
The same loop runs under `torchrun` (DistributedDataParallel): each rank trains on its shard
of every epoch's permutation, with the global batch size of the config, and validation/test
sums are all-reduced, so figures are exact.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cae import runs
from cae.arch import build_model, frozen_folds, trace
from cae.config import RunConfig, load_config, save_config
from cae.data import Cifar10, channel_stats, load_cifar10, split_indices
from cae.errors import CaeError
from cae.metrics import MetricSums, squared_error_sum
from cae.tasks import Task

Log = Callable[[str], None]
NORMALIZATION = "normalization.json"


# ----------------------------------------------------------------------------- devices
def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is a CaeError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CaeError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise CaeError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks of up to 64 MB for reuse instead of unmapping them (CPU runs).

    By default glibc serves large blocks with mmap and gives them back to the OS on free, so the
    multi-MB activations of every evaluation batch are page-faulted in again: measured 30-45%
    slower evaluation (`cae bench`). Peak memory does not grow (freed blocks are reused, not
    added to). Returns whether it applied (False off glibc, e.g. macOS: nothing changes); the
    setting is process-wide, so it is made once.
    """
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, 512 << 20))
    except (OSError, AttributeError):  # not glibc
        return False


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 runs natively (CPU: AVX512-BF16 or AMX; CUDA: Ampere and later)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return bool(cpu or amx)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32.

    'auto' is bf16 autocast where the device runs bf16 natively (CPUs with AVX512-BF16 or AMX,
    CUDA GPUs from Ampere on), else float32. Measured on a 2-core AVX512-BF16 CPU at the
    defaults (reference, 10 epochs, seeds 0-2): test MSE 0.003664 / 0.003539 / 0.003777 in bf16
    vs 0.003811 / 0.003622 / 0.003741 in float32 (means 1.7% apart, bf16 the lower), training
    3.24x vs 2.91x the naive loop (`cae bench`). The loss and every metric stay float32.
    """
    if name == "fp32":
        return None
    if name == "auto":
        return torch.bfloat16 if bf16_supported(device) else None
    if name == "bf16":
        if not bf16_supported(device):
            raise CaeError(f"--precision bf16 is not supported natively on this {device.type}; use auto or fp32")
        return torch.bfloat16
    if device.type != "cuda":
        raise CaeError("--precision fp16 needs a CUDA GPU; use auto, bf16 or fp32 on CPU")
    return torch.float16


# ----------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = device_name != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, local)


def _all_reduce(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        # gloo reduces CPU tensors only; nccl needs them on the GPU
        dev = torch.device("cuda", d.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
        t = t.to(dev)
        dist.all_reduce(t)
        t = t.cpu()
    return t


# ----------------------------------------------------------------------------- schedule
def lr_at(step: int, total: int, cfg: RunConfig) -> float:
    """Learning rate at a step: one-cycle (linear warm-up, cosine down), cosine, or constant."""
    peak, t = cfg.train.lr, cfg.train
    if t.schedule == "constant":
        return peak
    warm = int(total * t.warmup) if t.schedule == "onecycle" else 0
    if step < warm:
        return peak * (0.04 + 0.96 * step / warm)
    frac = (step - warm) / max(1, total - warm)
    return peak * (0.5 * (1 + math.cos(math.pi * min(1.0, frac))) * 0.999 + 0.001)


# ----------------------------------------------------------------------------- evaluation
def evaluate(model: nn.Module, images: torch.Tensor, task: Task, batch_size: int = 1000,
             amp: torch.dtype | None = None, full: bool = True, d: Dist = Dist()) -> dict[str, float]:
    """Metrics of `model` on uint8 images (this rank's shard in a distributed run).

    `full=False` computes the MSE only (used for validation each epoch).
    """
    was_training = model.training
    model.eval()
    sums = MetricSums(colour=task.colour and full, full=full)
    device = next(model.parameters()).device
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None), \
            frozen_folds(model):
        for i in range(0, len(images), batch_size):
            batch = _on_device(images[i:i + batch_size], device)
            sums.add(task.predict_rgb_u8(model, batch, amp or torch.float32), batch)
    model.train(was_training)
    if d.world > 1:
        sums.load_tensor(_all_reduce(sums.as_tensor(), d))
    return sums.result()


# ----------------------------------------------------------------------------- the run
@dataclass
class Prepared:
    """Everything a run's training and evaluation need, on the device."""

    cfg: RunConfig
    device: torch.device
    amp: torch.dtype | None
    task: Task
    split: dict[str, np.ndarray]
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    classes: tuple[str, ...]


def prepare(cfg: RunConfig, data: Cifar10 | None = None, split: dict[str, np.ndarray] | None = None,
            d: Dist = Dist()) -> Prepared:
    """Load the data, split it, fit the normalization, put the splits on the device."""
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and d.world > 1:
        device = torch.device("cuda", d.local_rank)
    amp = resolve_precision(cfg.train.precision, device)
    if device.type == "cpu":
        keep_freed_memory()
    data = data if data is not None else load_cifar10(cfg.data.dir or None)
    split = split if split is not None else split_indices(data.labels, cfg.data.seed, cfg.data.limit)
    mean = std = None
    if cfg.data.normalize == "standardize":
        # from the plain (NCHW) gather, as always: the statistics' float reductions over a
        # channels_last copy take ~400 MB more peak memory; freed before the splits are made
        src = data.images[split["train"]]
        mean, std = channel_stats(src if cfg.task == "reconstruct" else _luma_u8(src))
        del src
    train = gather_split(data.images, split["train"])
    task = Task.from_config(cfg, mean, std)
    # the whole split on the device when it fits (CIFAR-10 is 184 MB as uint8)
    on = device if device.type == "cpu" or _fits_on_gpu(data.images, device) else torch.device("cpu")
    return Prepared(cfg, device, amp, task, split, train.to(on), gather_split(data.images, split["val"]).to(on),
                    gather_split(data.images, split["test"]).to(on), data.classes)


def gather_split(images: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """The images at `idx`, channels_last like every batch the model sees: gathered straight
    into that layout, so no batch pays for the reorder (measured: a uint8 batch of 1,000 as
    channels_last float in 1.2 ms instead of 3.6 ms), and without a second copy of the split."""
    nhwc = images.permute(0, 2, 3, 1)
    out = torch.empty((len(idx), *nhwc.shape[1:]), dtype=images.dtype)  # (N, H, W, C) contiguous
    return torch.index_select(nhwc, 0, torch.as_tensor(idx), out=out).permute(0, 3, 1, 2)


def _luma_u8(images: torch.Tensor) -> torch.Tensor:
    from cae.data import luma

    return (luma(images.float()).round().clamp(0, 255)).to(torch.uint8)


def _fits_on_gpu(images: torch.Tensor, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * 2 < free


def make_model(cfg: RunConfig, task: Task, device: torch.device) -> nn.Module:
    """The run's model, initialised from the run's seed, channels_last on its device."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.arch, task.in_channels, task.out_channels)
    return model.to(device, memory_format=torch.channels_last)


def make_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Adam:
    """Adam with the run's learning rate and weight decay, as one fused update on CPU and CUDA
    (3x faster than the per-tensor loop for a model of a few thousand parameters, where the
    optimizer step is a visible part of each training step)."""
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=fused)


def train_run(cfg: RunConfig, out: str | Path, *, force: bool = False, progress: bool = True,
              data: Cifar10 | None = None, log: Log = print) -> dict[str, float]:
    """Train `cfg` into the run folder `out` and return its test metrics.

    A finished run is left alone unless `force` (asking it for other epochs is an error: it is
    not extended); an unfinished one resumes from its last finished epoch. Every file is
    written atomically; a lock keeps a second process out.
    """
    cfg.validate()
    out = Path(out)
    d = init_distributed(cfg.train.device)
    cfg.world_size = d.world
    info = trace(cfg.arch, (Task.from_config(cfg).in_channels, 32, 32), Task.from_config(cfg).out_channels)
    lock = runs.RunLock(out) if d.main else None
    try:
        # rank 0 alone takes the lock and judges the folder; every rank follows its verdict, so a
        # refusal stops all ranks at once instead of leaving some waiting in a collective
        if _on_main(d, lambda: _start(out, cfg, force, lock, log)) == "finished":
            return runs.read_json(out / runs.TEST_METRICS, ("mse",))
        state = None
        if force:
            _barrier(d)
            if d.main:
                _clear_run(out)
            _barrier(d)
        elif (out / runs.LAST).exists():
            state = _load_resume(out, cfg)
        split = runs.load_split(out / runs.SPLIT) if state is not None else None
        p = prepare(cfg, data, split, d)
        if d.main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / runs.CONFIG)
            if split is None:
                runs.save_split(out / runs.SPLIT, p.split)
            if p.task.mean:  # the fitted input statistics, needed to use the model later
                runs.write_json(out / NORMALIZATION, {"mean": list(p.task.mean), "std": list(p.task.std)})
        return _fit(p, out, info.params, info.latent_size, state, d, progress, log)
    finally:
        if lock:
            lock.release()


def _start(out: Path, cfg: RunConfig, force: bool, lock: runs.RunLock, log: Log) -> str:
    """Rank 0's check before training: take the lock; 'finished' (same settings) or 'train'."""
    lock.acquire()
    runs.sweep_temporary_files(out)  # left by a process killed mid-write; we hold the lock
    if runs.is_finished(out) and not force:
        result = runs.read_json(out / runs.TEST_METRICS, ("mse",))
        # never report another configuration's result as this one's
        saved = _check_same_config(out, cfg).train.epochs
        if saved != cfg.train.epochs:  # (an unfinished run may resume with other epochs)
            raise CaeError(f"{out} finished {saved} epochs and {cfg.train.epochs} were asked for: a finished run "
                           f"is not extended (its learning-rate schedule ended with it); use another --out, "
                           f"or --force to train {cfg.train.epochs} epochs from scratch")
        log(f"{out} is already finished (test MSE {result['mse']:.5f}); use --force to train again")
        return "finished"
    return "train"


def _on_main(d: Dist, fn: Callable[[], str]) -> str:
    """Run `fn` on rank 0 and give its result, or its CaeError, to every rank."""
    outcome: list = [("ok", "")]
    if d.main:
        try:
            outcome = [("ok", fn())]
        except CaeError as e:
            outcome = [("error", str(e))]
    if d.world > 1:
        dist.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind == "error":
        raise CaeError(value)
    return value


def _barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def _clear_run(out: Path) -> None:
    for name in (runs.LAST, runs.BEST, runs.TEST_METRICS, runs.METRICS, runs.SPLIT, "loss.png", "samples.png"):
        (out / name).unlink(missing_ok=True)


def _check_same_config(out: Path, cfg: RunConfig) -> RunConfig:
    """Refuse settings that differ from the run's saved config; return the saved config.

    Not compared: epochs (an unfinished run may be asked for more; `_start` refuses other
    epochs for a finished one), device, world size, and the data folder's
    location (the same files may live elsewhere now)."""
    def flat(c: RunConfig) -> dict:
        items = {}
        for k, v in c.to_dict().items():
            items.update({f"{k}.{kk}": vv for kk, vv in v.items()} if isinstance(v, dict) else {k: v})
        for k in ("world_size", "train.epochs", "train.device", "data.dir"):
            items.pop(k)
        return items

    saved = load_config(out / runs.CONFIG)
    mine, theirs = flat(cfg), flat(saved)
    diff = [f"{k} {theirs[k]!r} saved, {mine[k]!r} given" for k in mine if mine[k] != theirs[k]]
    if diff:
        raise CaeError(f"{out / runs.CONFIG} does not match the settings given ({'; '.join(diff)}); "
                       "use the same settings to resume, another --out, or --force to start over")
    return saved


def _load_resume(out: Path, cfg: RunConfig) -> dict:
    """The resume state; a config that differs from the saved one is refused (not retrained over)."""
    _check_same_config(out, cfg)
    state = runs.load_torch(out / runs.LAST)
    if not isinstance(state, dict) or not {"model", "optimizer", "epoch", "rows"} <= set(state):
        raise CaeError(f"checkpoint {out / runs.LAST} is not a cae resume checkpoint; rerun with --force")
    return state


def _fit(p: Prepared, out: Path, params: int, latent_size: int, state: dict | None, d: Dist,
         progress: bool, log: Log) -> dict[str, float]:
    cfg, t = p.cfg, p.cfg.train
    model = make_model(cfg, p.task, p.device)
    if p.task.bins and cfg.color.rebalance:
        model.bin_weights.copy_(_bin_weights(p))
    opt = make_optimizer(cfg, model)
    rows: list[dict] = []
    best_val = math.inf
    start_epoch = 0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CaeError(f"checkpoint {out / runs.LAST} does not fit the model of {out / runs.CONFIG} "
                           f"({str(e).splitlines()[0]}); rerun with --force") from None
        rows, best_val, start_epoch = list(state["rows"]), float(state["best_val"]), int(state["epoch"])
        if d.main:
            log(f"resuming {out} after epoch {start_epoch}")
    net: nn.Module = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[p.device.index] if p.device.type == "cuda" else None)

    n = len(p.train)
    global_bs = min(t.batch_size, n)
    if global_bs % d.world:
        raise CaeError(f"batch size {global_bs} is not divisible by the {d.world} processes; choose a multiple")
    bs = global_bs // d.world
    steps_per_epoch = n // global_bs
    total = steps_per_epoch * t.epochs
    for epoch in range(start_epoch, t.epochs):
        t0 = time.perf_counter()
        xs = p.train[epoch_order(n, global_bs, t.seed, epoch, d).to(p.train.device)]
        net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=p.device)
        bar = _bar(steps_per_epoch, f"epoch {epoch + 1}/{t.epochs}", progress and d.main)
        for i in range(steps_per_epoch):
            lr = lr_at(epoch * steps_per_epoch + i, total, cfg)
            loss = train_step(p, net, opt, xs[i * bs:(i + 1) * bs], lr)
            loss_sum += loss
            if p.device.type == "cpu" or i % 50 == 0 or i == steps_per_epoch - 1:
                # distributed: the mean over ranks, so every rank stops at the same step (a rank
                # that stopped alone would leave the others waiting in the next all-reduce)
                value = _all_reduce(loss.double().reshape(1), d).item() / d.world if d.world > 1 \
                    else loss.item()
                if not math.isfinite(value):
                    raise CaeError(f"training diverged: loss {value} at epoch {epoch + 1}, step {i + 1} "
                                   f"(lr {lr:.2e}); lower --lr or use --precision fp32")
                if bar is not None and (i % 20 == 0 or i == steps_per_epoch - 1):
                    bar.set_postfix_str(f"loss {value:.5f}", refresh=False)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        train_mse = _all_reduce(loss_sum.cpu(), d).item() / (steps_per_epoch * d.world)
        val = evaluate(model, _shard(p.val, d), p.task, t.eval_batch_size, p.amp, full=False, d=d)["mse"]
        seconds = time.perf_counter() - t0
        rows.append({"epoch": epoch + 1, "train_mse": train_mse, "val_mse": val, "lr": lr, "seconds": seconds})
        if d.main:
            log(f"epoch {epoch + 1:>3}/{t.epochs}  train_mse {train_mse:.5f}  val_mse {val:.5f}  "
                f"lr {lr:.2e}  {seconds:.1f}s")
            if val < best_val:
                best_val = val
                runs.save_torch(out / runs.BEST, model.state_dict())
            runs.write_metrics_csv(out / runs.METRICS, rows)
            # last.pt is written after best.pt and metrics.csv: if it says epoch k, both are at k
            runs.save_torch(out / runs.LAST, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                              "epoch": epoch + 1, "rows": rows, "best_val": best_val})
        best_val = min(best_val, val)
        _barrier(d)
    return _finish(p, model, out, rows, params, latent_size, d, log)


def _bin_weights(p: Prepared) -> torch.Tensor:
    """Rebalancing weights from the chroma bin frequencies of (every 4th image of) the training split."""
    from cae.color import bin_frequencies, chroma, rebalance_weights

    freq = torch.zeros(p.task.bins ** 2)
    sample = p.train[::4]
    for i in range(0, len(sample), 2000):
        part = sample[i:i + 2000]
        freq += bin_frequencies(chroma(part.float().div(255)), p.task.bins) * (len(part) / len(sample))
    return rebalance_weights(freq, p.cfg.color.rebalance).to(p.device)


def epoch_order(n: int, global_bs: int, seed: int, epoch: int, d: Dist = Dist()) -> torch.Tensor:
    """This rank's training indices for an epoch, in order: one seeded shuffle per epoch.

    Derived from (seed, epoch) alone, so a resumed run needs no saved RNG state. Each global
    batch of the permutation is cut into `world` equal parts, one per rank.
    """
    steps = n // global_bs
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)[: steps * global_bs]
    return perm.view(steps, d.world, global_bs // d.world)[:, d.rank].reshape(-1)


def train_step(p: Prepared, net: nn.Module, opt: torch.optim.Optimizer, batch_u8: torch.Tensor,
               lr: float) -> torch.Tensor:
    """One optimizer step on a uint8 batch; returns the float32 MSE loss (detached).

    The batch becomes float on the device only now (the split stays uint8); the forward runs
    under autocast when a mixed precision is on, the loss is always float32.
    """
    for group in opt.param_groups:
        group["lr"] = lr
    batch = _on_device(batch_u8, p.device)
    with torch.autocast(p.device.type, dtype=p.amp or torch.float32, enabled=p.amp is not None):
        if p.task.bins:  # a chroma classifier: cross-entropy over the bins, not MSE
            weights = getattr(net, "module", net).bin_weights if p.cfg.color.rebalance else None
            loss = p.task.class_loss(net, batch, weights)
        else:
            pred = p.task.predict_rgb_u8(net, batch, p.amp or torch.float32)
    if not p.task.bins:
        loss = mse(pred, batch)  # float32, against the uint8 images themselves
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`F.mse_loss(pred.float(), target)` for a float32 target or uint8 images as stored
    (`cae.metrics.squared_error_sum`); float32 for a bfloat16 prediction too."""
    return squared_error_sum(pred, target) / pred.numel()


def _on_device(batch_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A uint8 batch on the device, channels_last like the model: the network input and the
    loss are made from it directly (the float images are never built on this path)."""
    return batch_u8.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def _shard(images: torch.Tensor, d: Dist) -> torch.Tensor:
    return images[d.rank::d.world] if d.world > 1 else images


def _bar(total: int, desc: str, enabled: bool):  # noqa: ANN202 - tqdm or None
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)


def _finish(p: Prepared, model: nn.Module, out: Path, rows: list[dict], params: int, latent_size: int,
            d: Dist, log: Log) -> dict[str, float]:
    """Evaluate the best checkpoint on the test split; write plots, then test_metrics.json last."""
    model.load_state_dict(runs.load_torch(out / runs.BEST, p.device))
    calibration = {}
    if p.cfg.color.calibrate:  # every rank picks the same decoding (same model, same validation split)
        from cae.colorization import calibrate_decoding

        calibration = calibrate_decoding(model, p, out, d, log)
    test = evaluate(model, _shard(p.test, d), p.task, p.cfg.train.eval_batch_size, p.amp, full=True, d=d)
    best = min(rows, key=lambda r: r["val_mse"])
    result = {**test, "best_epoch": best["epoch"], "val_mse": best["val_mse"], "epochs": len(rows),
              "train_seconds": sum(r["seconds"] for r in rows), "params": params, "latent_size": latent_size,
              "task": p.cfg.task, "target": p.cfg.target, "arch": p.cfg.arch, "world_size": d.world,
              "device": p.device.type, "precision": str(p.amp).replace("torch.", "") if p.amp else "float32",
              "torch": torch.__version__, "python": platform.python_version(), **calibration}
    if d.main:
        from cae.plots import plot_loss, save_samples

        plot_loss(rows, out / "loss.png", title=f"{p.cfg.arch} ({p.cfg.task})")
        save_samples(model, p.test[:10], p.task, out / "samples.png")
        runs.write_json(out / runs.TEST_METRICS, result)
        log(f"test  mse {test['mse']:.5f}  psnr {test['psnr']:.2f} dB  ssim {test['ssim']:.4f}  -> {out}")
    _barrier(d)
    return result


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, RunConfig, Task]:
    """Load a finished run's best model, its config and its task (for eval and colorize)."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / runs.CONFIG)
    dev = resolve_device(device)
    mean = std = None
    if cfg.data.normalize == "standardize":
        stats = runs.read_json(run_dir / NORMALIZATION, ("mean", "std"))
        mean, std = stats["mean"], stats["std"]
    task = Task.from_config(cfg, mean, std)
    model = build_model(cfg.arch, task.in_channels, task.out_channels)
    try:
        model.load_state_dict(runs.load_torch(run_dir / runs.BEST, dev))
    except RuntimeError as e:
        raise CaeError(f"checkpoint {run_dir / runs.BEST} does not fit the model of {run_dir / runs.CONFIG} "
                       f"({str(e).splitlines()[0]}); retrain with --force") from None
    return model.to(dev, memory_format=torch.channels_last).eval(), cfg, task


def eval_run(run_dir: str | Path, data: Cifar10 | None = None, device: str = "auto") -> dict[str, float]:
    """Recompute a finished run's test metrics from its saved checkpoint and split."""
    run_dir = Path(run_dir)
    model, cfg, task = load_run(run_dir, device)
    split = runs.load_split(run_dir / runs.SPLIT)
    data = data if data is not None else load_cifar10(cfg.data.dir or None)
    dev = next(model.parameters()).device
    amp = resolve_precision(cfg.train.precision, dev)
    return evaluate(model, gather_split(data.images, split["test"]).to(dev), task, cfg.train.eval_batch_size, amp,
                    full=True)
