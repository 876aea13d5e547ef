"""A run's place among processes launched by `torchrun` (one process: rank 0 of 1).

Each rank trains on its shard of every batch; sums are all-reduced so figures are exact; only
rank 0 writes files, and it alone judges the run folder, its verdict given to every rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

from cae.core.text import os_error_line
from cae.errors import CaeError


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


def all_reduce(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        # gloo reduces CPU tensors only; nccl needs them on the GPU
        dev = torch.device("cuda", d.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
        t = t.to(dev)
        dist.all_reduce(t)
        t = t.cpu()
    return t


def on_main(d: Dist, fn: Callable[[], str | None]) -> str | None:
    """Run `fn` on rank 0 and give its result, or its error, to every rank, so a refusal or a file
    rank 0 cannot write (a full disk, a read-only folder) stops every rank at once with the same
    line instead of leaving the others waiting in a collective until its timeout. Every rank
    calls it at the same point; it returns when rank 0 is done (a barrier)."""
    outcome: list = [("ok", None)]
    if d.main:
        try:
            outcome = [("ok", fn())]
        except CaeError as e:
            outcome = [("error", str(e))]
        except OSError as e:
            outcome = [("error", os_error_line(e))]
    if d.world > 1:
        dist.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind == "error":
        raise CaeError(value)
    return value


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def shard(images: torch.Tensor, d: Dist) -> torch.Tensor:
    """This rank's share of a split for evaluation (every world-th image)."""
    return images[d.rank::d.world] if d.world > 1 else images
