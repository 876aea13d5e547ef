"""Training and evaluation: a fit loop you can read top to bottom.

The split's images live on the device as one uint8 tensor (airbench's habit); each epoch does
one seeded shuffle (a single gather) and takes contiguous slices; a batch becomes float only
when taken. Adam is one fused kernel, evaluation runs under `torch.inference_mode()`, and bf16
autocast is used where the device runs it natively (the loss and all metrics stay float32).

The model trained is the plain one of `cae.core.model.build_model`, or a faster equivalent when
the caller passes `accelerate` (the `cae.fast` path: same parameters, same state_dict).
The same loop runs under `torchrun`: each rank trains on its shard of every batch, with the
global batch size of the config, and validation/test sums are all-reduced, so figures are exact.
"""

from __future__ import annotations

import functools
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from cae.core import runs
from cae.core.config import RUN_LOCAL, RunConfig, differences, load_config, save_config
from cae.core.data import Cifar10, channel_stats, load_cifar10, luma, split_indices
from cae.core.decoding import (DECODING_FILE, between_steps, choose_decoding, decoding_curve, decoding_param,
                               reset_decoding)
from cae.core.device import keep_freed_memory, resolve_device, resolve_precision
from cae.core.distributed import Dist, all_reduce, barrier, init_distributed, on_main, shard
from cae.core.metrics import MetricSums
from cae.core.model import build_model
from cae.core.spec import trace
from cae.core.stability import find_instability, mean_image_mse
from cae.core.tasks import Task
from cae.core.text import Log, first_line
from cae.errors import CaeError

Accelerate = Callable[[nn.Module], nn.Module]
NORMALIZATION = "normalization.json"
PRECISION_NAMES = {None: "float32", torch.bfloat16: "bfloat16"}


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


def evaluate(model: nn.Module, images: torch.Tensor, task: Task, batch_size: int = 1000,
             amp: torch.dtype | None = None, full: bool = True, d: Dist = Dist()) -> dict[str, float]:
    """Metrics of `model` on uint8 images (this rank's shard in a distributed run).

    `full=False` computes the MSE only (validation each epoch; SSIM is the costly part).
    """
    was_training = model.training
    model.eval()
    sums = MetricSums(colour=task.colour and full, full=full)
    device = next(model.parameters()).device
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        for i in range(0, len(images), batch_size):
            # one pass from uint8 to [0, 1] floats, the same values as .float() / 255; the metrics
            # take them as the target too, so no batch is converted twice
            rgb = torch.div(to_device(images[i:i + batch_size], device), 255)
            sums.add(task.predict_rgb(model, rgb, float32=False), rgb)
    model.train(was_training)
    if d.world > 1:
        sums.load_tensor(all_reduce(sums.as_tensor(), d))
    return sums.result()


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

    @functools.cached_property
    def mean_image_mse(self) -> float | None:
        """The epochs' validation error of the training split's mean image, the mark of an output
        collapsed to a constant (`cae.core.stability`); None where the model predicts chroma only."""
        return mean_image_mse(self.train, _epoch_val(self)) if self.task.pred_channels == 3 else None


def prepare(cfg: RunConfig, data: Cifar10 | None = None, split: dict[str, np.ndarray] | None = None,
            d: Dist = Dist()) -> Prepared:
    """Load the data, split it, fit the normalization, put the splits on the device."""
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and d.world > 1:
        device = torch.device("cuda", d.local_rank)
    if device.type == "cpu":
        keep_freed_memory()
    data = data if data is not None else load_cifar10(cfg.data.dir or None)
    split = split if split is not None else split_indices(data.labels, cfg.data.seed, cfg.data.limit)
    mean = std = None
    if cfg.data.normalize == "standardize":
        src = data.images[split["train"]]
        mean, std = channel_stats(src if cfg.task == "reconstruct" else luma_u8(src))
        del src
    task = Task.from_config(cfg, mean, std)
    # the whole split on the device when it fits (CIFAR-10 is 184 MB as uint8)
    on = device if device.type == "cpu" or _fits_on_gpu(data.images, device) else torch.device("cpu")
    train, val, test = (gather_split(data.images, split[k]).to(on) for k in ("train", "val", "test"))
    return Prepared(cfg, device, resolve_precision(cfg.train.precision, device), task, split, train, val, test,
                    data.classes)


def gather_split(images: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """The images at `idx`, channels_last like every batch the model sees: gathered straight
    into that layout, so no batch pays for the reorder, and without a second copy of the split."""
    nhwc = images.permute(0, 2, 3, 1)
    out = torch.empty((len(idx), *nhwc.shape[1:]), dtype=images.dtype)  # (N, H, W, C) contiguous
    return torch.index_select(nhwc, 0, torch.as_tensor(idx), out=out).permute(0, 3, 1, 2)


def luma_u8(images: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of uint8 RGB images, as uint8 (the colorizer's input statistics)."""
    return (luma(images.float()).round().clamp(0, 255)).to(torch.uint8)


def _fits_on_gpu(images: torch.Tensor, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * 2 < free


def make_model(cfg: RunConfig, task: Task, device: torch.device, accelerate: Accelerate | None = None) -> nn.Module:
    """The run's model, initialised from the run's seed, on its device (made faster by
    `accelerate`, which keeps its parameters and state_dict)."""
    torch.manual_seed(cfg.train.seed)
    model = with_spread(build_model(cfg.arch, task.in_channels, task.out_channels), cfg).to(device)
    return accelerate(model) if accelerate else model


def with_spread(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """`model` decoding at the run's color.spread (a classifier's; a setting, not in the weights)."""
    if hasattr(model, "spread"):
        model.spread.fill_(cfg.color.spread)
    return model


def make_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Adam:
    """Adam with the run's learning rate and weight decay, as one fused update on CPU and CUDA
    (for a model of a few thousand parameters the per-tensor loop is a visible part of a step)."""
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=fused)


def train_run(cfg: RunConfig, out: str | Path, *, force: bool = False, progress: bool = True,
              data: Cifar10 | None = None, log: Log = print, accelerate: Accelerate | None = None) -> dict:
    """Train `cfg` into the run folder `out` and return its test metrics.

    A finished run is left alone unless `force`; an unfinished one resumes from its last
    finished epoch. Asked for other settings (other epochs included: the learning-rate schedule
    is fixed when a run starts), a run is refused, not changed. Every file is written
    atomically; a lock keeps a second process out.
    """
    cfg.validate()
    out = Path(out)
    d = init_distributed(cfg.train.device)
    cfg.world_size = d.world
    task = Task.from_config(cfg)
    info = trace(cfg.arch, (task.in_channels, 32, 32), task.out_channels)
    lock = runs.RunLock(out) if d.main else None
    try:
        if on_main(d, lambda: _start(out, cfg, force, lock, log)) == "finished":
            return runs.read_json(out / runs.TEST_METRICS, ("mse",))
        state = _load_resume(out, cfg) if not force and (out / runs.LAST).exists() else None
        if force:
            on_main(d, lambda: _clear_run(out))
        barrier(d)
        p = prepare(cfg, data, runs.load_split(out / runs.SPLIT) if state else None, d)
        on_main(d, lambda: _write_run_files(out, p, fresh=state is None))
        if state and d.main and state.get("device", p.device.type) != p.device.type:
            log(f"{out}: epochs 1-{state['epoch']} ran on {state['device']}, the rest run on {p.device.type} "
                f"in the same precision ({PRECISION_NAMES[p.amp]})")
        model = make_model(cfg, p.task, p.device, accelerate)
        rows = fit(p, model, out, state, d, progress, log)
        return _finish(p, model, out, rows, info.params, info.latent_size, d, log)
    finally:
        if lock:
            lock.release()


def _write_run_files(out: Path, p: Prepared, fresh: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_config(p.cfg, out / runs.CONFIG)
    if fresh:
        runs.save_split(out / runs.SPLIT, p.split)
    if p.task.mean:  # the fitted input statistics, needed to use the model later
        runs.write_json(out / NORMALIZATION, {"mean": list(p.task.mean), "std": list(p.task.std)})


def fit(p: Prepared, model: nn.Module, out: Path, state: dict | None, d: Dist, progress: bool, log: Log) -> list[dict]:
    """The training loop: epochs of shuffled batches, validation, checkpoints; returns the rows."""
    t = p.cfg.train
    if p.task.bins and p.cfg.color.rebalance:
        model.bin_weights.copy_(_bin_weights(p))
    opt = make_optimizer(p.cfg, model)
    rows, best_val, start = resume_into(model, opt, state, out) if state else ([], math.inf, 0)
    if state and d.main:
        log(f"resuming {out} after epoch {start}")
    net = model if d.world == 1 else nn.parallel.DistributedDataParallel(
        model, device_ids=[p.device.index] if p.device.type == "cuda" else None)
    n, global_bs = len(p.train), min(t.batch_size, len(p.train))
    if global_bs % d.world:
        raise CaeError(f"batch size {global_bs} is not divisible by the {d.world} processes; choose a multiple")
    bs, steps = global_bs // d.world, n // global_bs
    for epoch in range(start, t.epochs):
        t0 = time.perf_counter()
        order = epoch_order(n, global_bs, t.seed, epoch, d)
        xs = p.train[order.to(p.train.device)]
        if t.flip:
            xs = mirror(xs, flip_mask(n, t.seed, epoch)[order])
        if t.shift:
            xs = translate(xs, shift_offsets(n, t.shift, t.seed, epoch)[order])
        net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=p.device)
        for i in _progress(range(steps), f"epoch {epoch + 1}/{t.epochs}", progress and d.main):
            lr = lr_at(epoch * steps + i, steps * t.epochs, p.cfg)
            loss = train_step(p, net, opt, xs[i * bs:(i + 1) * bs], lr, step_seed(t.seed, epoch * steps + i, d))
            loss_sum += loss
            if p.device.type == "cpu" or i % 50 == 0 or i == steps - 1:  # a GPU check syncs: not every step
                _check_finite(loss, d, epoch, i, lr)
        train_loss = all_reduce(loss_sum.cpu(), d).item() / (steps * d.world)
        val = evaluate(model, shard(_epoch_val(p), d), p.task, t.eval_batch_size, p.amp, full=False, d=d)["mse"]
        rows.append({"epoch": epoch + 1, "train_loss": train_loss, "val_mse": val, "lr": lr,
                     "seconds": time.perf_counter() - t0})
        jump = find_instability(rows, p.mean_image_mse, finished=epoch + 1 == t.epochs)
        rows[-1]["unstable"] = int(jump is not None)  # from this epoch on, metrics.csv says so
        if d.main:
            log(f"epoch {epoch + 1:>3}/{t.epochs}  train_{p.task.loss_name} {train_loss:.5f}  val_mse {val:.5f}  "
                f"lr {lr:.2e}  {rows[-1]['seconds']:.1f}s{'  UNSTABLE' if jump else ''}")
            if jump and jump.epoch == epoch + 1:  # said once, in the epoch it happens
                log(f"warning: training became unstable at {jump.text()}; the test will use the best validation "
                    f"epoch. A lower peak learning rate than {t.lr:g} (--lr)"
                    f"{' or gradient clipping (--clip 0.05)' if not t.clip else ''} usually avoids it")
        on_main(d, lambda: _checkpoint(p, out, model, opt, rows, best_val))  # rank 0's failure stops every rank
        best_val = min(best_val, val)
    return rows


def train_step(p: Prepared, net: nn.Module, opt: torch.optim.Optimizer, batch_u8: torch.Tensor,
               lr: float, seed: int = 0) -> torch.Tensor:
    """One optimizer step on a uint8 batch; returns the float32 MSE loss (detached). `seed`
    draws a guided colorizer's simulated hints (other tasks draw nothing)."""
    for group in opt.param_groups:
        group["lr"] = lr
    batch = to_device(batch_u8, p.device)
    gen = torch.Generator().manual_seed(seed) if p.task.hints else None
    with torch.autocast(p.device.type, dtype=p.amp or torch.float32, enabled=p.amp is not None):
        if p.task.bins:  # a chroma classifier: cross-entropy over the bins, not MSE
            weights = getattr(net, "module", net).bin_weights if p.cfg.color.rebalance else None
            loss = p.task.class_loss(net, batch, weights, gen)
        else:
            rgb = torch.div(batch, 255)  # one pass (not a float copy, then a division)
            # float32 before the loss: mse_loss promoting a bfloat16 prediction itself is
            # slower, with the same values and gradients
            pred = p.task.predict_rgb(net, rgb, guide=p.task.training_guide(rgb, gen) if gen else None)
    if not p.task.bins:
        loss = mse(pred, rgb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if p.cfg.train.clip:  # after backward: under DDP the gradients are all-reduced, so every rank clips alike
        nn.utils.clip_grad_norm_(net.parameters(), p.cfg.train.clip, foreach=True)
    opt.step()
    return loss.detach()


def _bin_weights(p: Prepared) -> torch.Tensor:
    """Rebalancing weights from the chroma bin frequencies of (every 4th image of) the training split."""
    from cae.core.color import rebalance_weights

    return rebalance_weights(bin_prior(p.train, p.task.bins), p.cfg.color.rebalance).to(p.device)


def bin_prior(images_u8: torch.Tensor, bins: int, step: int = 4) -> torch.Tensor:
    """The share of each chroma bin (bins*bins,) in every `step`-th image, at the classifier's
    resolution (chroma averaged over 2x2, as its training targets are)."""
    from cae.core.color import bin_frequencies, chroma

    freq, sample = torch.zeros(bins ** 2, device=images_u8.device), images_u8[::step]
    for i in range(0, len(sample), 2000):
        part = sample[i:i + 2000]
        c = nn.functional.avg_pool2d(chroma(part.float().div(255)), 2)
        freq += bin_frequencies(c, bins) * (len(part) / len(sample))
    return freq


def calibrate_decoding(model: torch.nn.Module, p, out: Path, d, log: Log = print) -> dict:  # noqa: ANN001
    """train_run's calibration (color.calibrate): pick the decoding of a trained colorizer on the
    validation split, set it in `model` (saved to best.pt) and return the test metrics at the
    default decoding (gain 1 / temperature 1) as `default_*`, for comparison."""
    param, grid = decoding_param(p.task, p.cfg.color)
    c = p.cfg.color
    if param == "boost":  # the decoding-time rebalancing weights, from the training split's bin shares
        from cae.core.color import rebalance_weights

        model.log_weights.copy_(rebalance_weights(bin_prior(p.train, p.task.bins), c.decode_rebalance).log())
    curve = decoding_curve(model, p.val, p.task, param, grid)
    finer = between_steps(curve, param, c.colorfulness_target)
    if finer is not None:  # the target lies between two grid points: measure the crossing, chosen if it holds
        curve += decoding_curve(model, p.val, p.task, param, (finer,))
        curve.sort(key=lambda r: r["colorfulness"])  # the grid's order: every strength adds colour
    chosen = choose_decoding(curve, param, c.mse_tolerance, c.colorfulness_target)
    base = evaluate(model, shard(p.test, d), p.task, p.cfg.train.eval_batch_size, p.amp, full=True, d=d)
    getattr(model, param).fill_(chosen)

    def save() -> None:
        runs.write_json(out / DECODING_FILE, {"param": param, "chosen": chosen, "split": "val",
                                              "tolerance": c.mse_tolerance, "target": c.colorfulness_target,
                                              "curve": curve})
        runs.save_torch(out / runs.BEST, model.state_dict())
        log(f"{out}: {param} {chosen:g} (validation); default test mse {base['mse']:.5f}, colorfulness "
            f"{base['colorfulness']:.1f} (truth {base['colorfulness_truth']:.1f})")
    on_main(d, save)
    return {param: chosen, **{f"default_{k}": base[k] for k in ("mse", "psnr", "ssim", "chroma_mse", "colorfulness")}}


def step_seed(seed: int, step: int, d: Dist = Dist()) -> int:
    """The seed of one training step's random draws on one rank (a guided colorizer's hints):
    derived from (seed, step, rank) alone, so a resumed run draws what the uninterrupted one did."""
    return (seed * 1_000_003 + step) * max(1, d.world) + d.rank


def epoch_order(n: int, global_bs: int, seed: int, epoch: int, d: Dist = Dist()) -> torch.Tensor:
    """This rank's training indices for an epoch, in order: one seeded shuffle per epoch.

    Derived from (seed, epoch) alone, so a resumed run needs no saved RNG state. Each global
    batch of the permutation is cut into `world` equal parts, one per rank.
    """
    steps = n // global_bs
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)[: steps * global_bs]
    return perm.view(steps, d.world, global_bs // d.world)[:, d.rank].reshape(-1)


def flip_mask(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Which of the n training images an epoch mirrors (about half): derived from (seed, epoch)
    alone, like the shuffle, so a resumed run and every rank of a distributed one agree."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch + 7_919)
    return torch.rand(n, generator=g) < 0.5


def mirror(images: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """`images` (N, C, H, W) with those marked in `which` (N,) mirrored left-right."""
    return torch.where(which.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)


def shift_offsets(n: int, max_shift: int, seed: int, epoch: int) -> torch.Tensor:
    """Each of the n training images' (rows, columns) translation for an epoch, (n, 2) integers
    in [-max_shift, max_shift]: derived from (seed, epoch) alone, like the shuffle."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch + 15_485)
    return torch.randint(-max_shift, max_shift + 1, (n, 2), generator=g)


def translate(images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """`images` (N, C, H, W), image i moved by offsets[i] = (rows, columns) pixels: output pixel
    (y, x) reads (y + rows, x + columns), reflected at the border (a pixel beyond the edge reads
    its mirror inside, as in numpy's 'reflect' padding). Returned channels_last."""
    n, _, h, w = images.shape
    offsets = offsets.to(images.device)

    def reflect(size: int, shift: torch.Tensor) -> torch.Tensor:  # (N, size) source indices
        i = (torch.arange(size, device=images.device) + shift.view(-1, 1)).abs()
        return torch.where(i > size - 1, 2 * (size - 1) - i, i)

    nhwc = images.permute(0, 2, 3, 1)  # gathered as (N, H, W, C): channels_last when permuted back
    c = nhwc.shape[3]
    # rows, then columns, each a gather along one axis by an index broadcast (not copied) to the
    # image's shape: no (N, H, W) table of offsets
    nhwc = nhwc.gather(1, reflect(h, offsets[:, 0]).view(n, h, 1, 1).expand(n, h, w, c))
    nhwc = nhwc.gather(2, reflect(w, offsets[:, 1]).view(n, 1, w, 1).expand(n, h, w, c))
    return nhwc.permute(0, 3, 1, 2)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean squared error against a float32 target: one fused pass forward and one backward
    (the gradient is the same as that of sum((pred - target)^2) / n, bit for bit)."""
    return nn.functional.mse_loss(pred, target, reduction="sum") / pred.numel()


def to_device(batch_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A uint8 batch on the device, channels_last like the model."""
    return batch_u8.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def _check_finite(loss: torch.Tensor, d: Dist, epoch: int, step: int, lr: float) -> None:
    # distributed: the mean over ranks, so every rank stops at the same step
    value = all_reduce(loss.double().reshape(1), d).item() / d.world if d.world > 1 else loss.item()
    if not math.isfinite(value):
        raise CaeError(f"training diverged: loss {value} at epoch {epoch + 1}, step {step + 1} "
                       f"(lr {lr:.2e}); lower --lr or use --precision fp32")


def _progress(steps: range, desc: str, enabled: bool):  # noqa: ANN202 - an iterable
    if not enabled:
        return steps
    from tqdm.auto import tqdm

    return tqdm(steps, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)


def _checkpoint(p: Prepared, out: Path, model: nn.Module, opt: torch.optim.Optimizer, rows: list[dict],
                best_val: float) -> None:
    """best.pt when validation improved, metrics.csv, then last.pt: if last.pt says epoch k,
    the other two are at k too. last.pt records the precision and device its epochs ran in, so a
    resume elsewhere can tell whether it would continue exactly (`check_resume_precision`)."""
    if rows[-1]["val_mse"] < best_val:
        runs.save_torch(out / runs.BEST, model.state_dict())
    runs.write_metrics_csv(out / runs.METRICS, rows)
    runs.save_torch(out / runs.LAST, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                      "epoch": rows[-1]["epoch"], "rows": rows,
                                      "best_val": min(best_val, rows[-1]["val_mse"]),
                                      "precision": PRECISION_NAMES[p.amp], "device": p.device.type})


def _finish(p: Prepared, model: nn.Module, out: Path, rows: list[dict], params: int, latent_size: int,
            d: Dist, log: Log) -> dict:
    """Evaluate the best checkpoint on the test split; write plots, then test_metrics.json last."""
    model.load_state_dict(runs.load_torch(out / runs.BEST, p.device))
    if p.cfg.color.calibrate:  # resumed after its calibration (best.pt holds it): start from the default
        reset_decoding(model)
    best = min(rows, key=lambda r: r["val_mse"])
    val_mse = _full_val_mse(p, model, best, d)  # before a calibration changes the decoding
    calibration = {}
    if p.cfg.color.calibrate:  # every rank picks the same decoding (same model, same validation split)
        calibration = calibrate_decoding(model, p, out, d, log)
    test = evaluate(model, shard(p.test, d), p.task, p.cfg.train.eval_batch_size, p.amp, full=True, d=d)
    result = {**test, "best_epoch": best["epoch"], "val_mse": val_mse, "epochs": len(rows),
              "train_seconds": sum(r["seconds"] for r in rows), "params": params, "latent_size": latent_size,
              "task": p.cfg.task, "target": p.cfg.target, "arch": p.cfg.arch, "world_size": d.world,
              "device": p.device.type, "precision": PRECISION_NAMES[p.amp], "loss": p.task.loss_name,
              "torch": torch.__version__, "python": platform.python_version(), **calibration,
              **_instability_record(p, rows)}
    on_main(d, lambda: _write_results(p, model, out, rows, result, log))
    return result


def _write_results(p: Prepared, model: nn.Module, out: Path, rows: list[dict], result: dict, log: Log) -> None:
    """Rank 0's files of a finished run: the plots, then test_metrics.json (it marks the run finished)."""
    from cae.core.plots import plot_loss, save_samples

    n_val = len(_epoch_val(p))
    plot_loss(rows, out / "loss.png", title=f"{p.cfg.arch} ({p.cfg.task})", loss=p.task.loss_name,
              val_label="validation" if n_val == len(p.val) else f"validation (first {n_val:,} images)")
    save_samples(model, p.test[:10], p.task, out / "samples.png")
    runs.write_json(out / runs.TEST_METRICS, result)
    log(f"test  mse {result['mse']:.5f}  psnr {result['psnr']:.2f} dB  ssim {result['ssim']:.4f}  -> {out}")


def _instability_record(p: Prepared, rows: list[dict]) -> dict:
    """test_metrics.json's account of instability: the epoch it began (None for a stable run) and
    what happened, so a finished run says so in its files as well as in its log."""
    jump = find_instability(rows, p.mean_image_mse)
    return {"unstable_epoch": jump and jump.epoch, "unstable": jump and jump.text()}


def _epoch_val(p: Prepared) -> torch.Tensor:
    """The validation images each epoch is scored on: the first `train.val_subset` (0: all)."""
    return p.val[:p.cfg.train.val_subset or None]


def _full_val_mse(p: Prepared, model: nn.Module, best: dict, d: Dist) -> float:
    """The best epoch's validation MSE on the whole split (its row has it already unless the
    epochs were validated on a subset)."""
    if len(_epoch_val(p)) == len(p.val):
        return best["val_mse"]
    t = p.cfg.train
    return evaluate(model, shard(p.val, d), p.task, t.eval_batch_size, p.amp, full=False, d=d)["mse"]


# ----------------------------------------------------------------------------- the run folder
def _start(out: Path, cfg: RunConfig, force: bool, lock: runs.RunLock, log: Log) -> str:
    """Rank 0's check before training: take the lock; 'finished' (same settings) or 'train'."""
    lock.acquire()
    runs.sweep_temporary_files(out)  # left by a process killed mid-write; we hold the lock
    if runs.is_finished(out) and not force:
        check_same_config(out, cfg)  # never report another configuration's result as this one's
        result = runs.read_json(out / runs.TEST_METRICS, ("mse",))
        log(f"{out} is already finished (test MSE {result['mse']:.5f}); use --force to train again")
        return "finished"
    return "train"


def _clear_run(out: Path) -> None:
    for name in (runs.LAST, runs.BEST, runs.TEST_METRICS, runs.METRICS, runs.SPLIT, "loss.png", "samples.png"):
        (out / name).unlink(missing_ok=True)


def check_same_config(out: Path, cfg: RunConfig, ignore: tuple[str, ...] = ()) -> RunConfig:
    """Refuse settings that differ from the run's saved config; return the saved config.

    Not compared: where the run ran (`cae.core.config.RUN_LOCAL`) and the settings in `ignore`.
    Epochs are: the one-cycle schedule is laid out over them when a run starts.
    """
    saved = load_config(out / runs.CONFIG)
    diff = differences(saved, cfg, RUN_LOCAL + ignore)
    if list(diff) == ["train.epochs"]:
        raise CaeError(f"{out} was started for {saved.train.epochs} epochs and {cfg.train.epochs} were asked for: "
                       "a run is not extended or cut (its learning-rate schedule is laid out over its epochs); "
                       f"use another --out, or --force to train {cfg.train.epochs} epochs from scratch")
    if diff:
        said = "; ".join(f"{k} {a!r} saved, {b!r} given" for k, (a, b) in diff.items())
        raise CaeError(f"{out / runs.CONFIG} does not match the settings given ({said}); "
                       "use the same settings to resume, another --out, or --force to start over")
    return saved


def _load_resume(out: Path, cfg: RunConfig) -> dict:
    """The resume state; a config that differs from the saved one is refused (not retrained over),
    and so is a precision other than the one its epochs ran in (`check_resume_precision`)."""
    saved = check_same_config(out, cfg, ignore=("train.precision",))  # compared as resolved, below
    state = runs.load_torch(out / runs.LAST)
    if not isinstance(state, dict) or not {"model", "optimizer", "epoch", "rows"} <= set(state):
        raise CaeError(f"checkpoint {out / runs.LAST} is not a cae resume checkpoint; rerun with --force")
    check_resume_precision(out, saved, cfg, state)
    return state


SHORT_PRECISION = {"float32": "fp32", "bfloat16": "bf16"}


def check_resume_precision(out: Path, saved: RunConfig, cfg: RunConfig, state: dict) -> None:
    """Refuse to resume `out` in another precision than the one its epochs ran in: 'auto' means
    bf16 on one machine and fp32 on another, and the rest of the run would silently change.
    Another device in the same precision may continue. Checkpoints of older versions record no
    precision: theirs is the saved config's when that is explicit, else the user must say it."""
    device = resolve_device(cfg.train.device)
    here = PRECISION_NAMES[resolve_precision(cfg.train.precision, device)]
    ran = state.get("precision") or {short: name for name, short in SHORT_PRECISION.items()}.get(saved.train.precision)
    if ran is None and cfg.train.precision == "auto":
        raise CaeError(f"{out / runs.LAST} does not record the precision its {state['epoch']} epoch(s) ran in "
                       "(train.precision 'auto'); pass --precision fp32 or bf16, the one it was started in, "
                       "or --force to start over")
    if ran is not None and ran != here:
        where = f" on {state['device']}" if "device" in state else ""
        raise CaeError(f"{out} ran its {state['epoch']} epoch(s) in {ran}{where}, and train.precision "
                       f"{cfg.train.precision!r} is {here} on this {device.type}: a run continues in one precision; "
                       f"pass --precision {SHORT_PRECISION[ran]} where the device runs it, or --force to start over")


def resume_into(model: nn.Module, opt: torch.optim.Optimizer, state: dict, out: Path) -> tuple[list, float, int]:
    """Load a resume state into the model and optimizer; (rows, best validation MSE, epoch)."""
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CaeError(f"checkpoint {out / runs.LAST} does not fit the model of {out / runs.CONFIG} "
                       f"({first_line(e)}); rerun with --force") from None
    return [runs.current_row(r) for r in state["rows"]], float(state["best_val"]), int(state["epoch"])


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, RunConfig, Task]:
    """A finished run's best model (plain modules, eval mode), its config and its task."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG).is_file():  # load_config's message is about config files
        raise CaeError(f"{run_dir} is not a run folder (it has no {runs.CONFIG}); "
                       "give the --out folder of a cae train run")
    if not (run_dir / runs.BEST).is_file():
        raise CaeError(f"{run_dir} has no trained model yet (no {runs.BEST}); finish it with cae train --out {run_dir}")
    cfg = load_config(run_dir / runs.CONFIG)
    dev = resolve_device(device)
    mean = std = None
    if cfg.data.normalize == "standardize":
        stats = runs.read_json(run_dir / NORMALIZATION, ("mean", "std"))
        mean, std = stats["mean"], stats["std"]
    task = Task.from_config(cfg, mean, std)
    model = with_spread(build_model(cfg.arch, task.in_channels, task.out_channels), cfg)
    try:
        model.load_state_dict(runs.load_torch(run_dir / runs.BEST, dev))
    except RuntimeError as e:
        raise CaeError(f"checkpoint {run_dir / runs.BEST} does not fit the model of {run_dir / runs.CONFIG} "
                       f"({first_line(e)}); retrain with --force") from None
    return model.to(dev).eval(), cfg, task


def load_history(run_dir: str | Path) -> list[dict]:
    """A run's error curve: one row per finished epoch (`epoch`, `train_loss`, `val_mse`, `lr`,
    `seconds`, `unstable`), as metrics.csv holds it; a finished or an interrupted run."""
    path = Path(run_dir) / runs.METRICS
    if not path.is_file():
        raise CaeError(f"{run_dir} has no {runs.METRICS} (no epoch finished there yet); "
                       f"give the --out folder of a cae train run")
    return runs.read_metrics_csv(path)


def recorded_precision(run_dir: Path) -> str:
    """The precision a finished run was evaluated in ('fp32' or 'bf16'), from test_metrics.json."""
    recorded = runs.read_json(run_dir / runs.TEST_METRICS, ("mse",)).get("precision", "float32")
    return "bf16" if recorded == "bfloat16" else "fp32"


def eval_run(run_dir: str | Path, data: Cifar10 | None = None, device: str = "auto",
             precision: str | None = None, accelerate: Accelerate | None = None) -> dict[str, float]:
    """Recompute a finished run's test metrics from its checkpoint and split, in the precision
    the run recorded (or `precision`), so the figures can be compared with test_metrics.json."""
    run_dir = Path(run_dir)
    model, cfg, task = load_run(run_dir, device)
    model = accelerate(model) if accelerate else model
    dev = next(model.parameters()).device
    if dev.type == "cpu":
        keep_freed_memory()  # the batches' multi-MB temporaries, reused instead of page-faulted in again
    amp = resolve_precision(precision or recorded_precision(run_dir), dev)
    return evaluate(model, run_images(run_dir, cfg, data, "test").to(dev), task, cfg.train.eval_batch_size, amp)


def run_images(run_dir: Path, cfg: RunConfig, data: Cifar10 | None = None, part: str = "test") -> torch.Tensor:
    """The uint8 images of one part ('train', 'val' or 'test') of a run's split, on the CPU."""
    data = data if data is not None else load_cifar10(cfg.data.dir or None)
    # shipped weights come without split.npz: the split is a function of the config's seed and limit
    split = runs.load_split(run_dir / runs.SPLIT) if (run_dir / runs.SPLIT).exists() else \
        split_indices(data.labels, cfg.data.seed, cfg.data.limit)
    return gather_split(data.images, split[part])
