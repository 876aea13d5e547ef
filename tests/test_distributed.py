"""Distributed training under torchrun (2 CPU processes, gloo) against a single process.

One `torchrun --standalone --nproc_per_node=2` launch runs a small script that
  1. trains run A (1 epoch) from scratch and has each rank save its final parameters to
     rank{r}.pt beside (not inside) the run folder, then
  2. resumes run B, trained for 1 epoch by a single process here, to 2 epochs,
  3. trains a run that diverges (every rank must stop at the same step), and
  4. tries a run folder locked by this test process (every rank must refuse), and
  5. trains two runs where rank 0 cannot write a file mid-run: a checkpoint, then the result
     (every rank must stop with rank 0's one-line error, none left waiting in a collective).
The tests then check rank agreement, the exactness of the all-reduced test metrics against a
single-process `cae eval`, the run folder's contents, that a 2-process epoch matches a
1-process epoch (same global batch, same seed), and the resume from 2 processes to 1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cae.core import runs
from cae.cli import main
from cae.core.config import load_config, save_config
from cae.core.train import eval_run
from helpers import write_smooth_cifar

pytestmark = pytest.mark.slow

RUN_FILES = {"config.toml", "split.npz", "metrics.csv", "loss.png", "best.pt", "last.pt", "test_metrics.json",
             "samples.png", "normalization.json"}

SCRIPT = r'''
"""Run by torchrun: train each job's run; a job with a dump folder saves every rank's parameters;
a job with a blocked file name makes it unwritable once the first epoch is trained."""
import gc
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import cae.core.train as tr
from cae.cli import _config_from_args, build_parser
from cae.errors import CaeError

torch.set_num_threads(1)
captured = {}
finish = tr._finish


def spy(p, model, *args, **kwargs):  # the trained model, before best.pt is loaded into it
    captured["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return finish(p, model, *args, **kwargs)


tr._finish = spy


def logger(out, blocked):
    def log(line):
        print(line, flush=True)
        if blocked and line.startswith("epoch"):  # rank 0, epoch 1 trained, its files not yet written
            # a folder where rank 0 is about to write the file: its rename fails, as root too (a
            # read-only folder does not stop root)
            (Path(out) / blocked).mkdir(exist_ok=True)
    return log


for dump, argv, blocked in json.loads(sys.argv[1]):  # one launch, several runs: starting torch is the slow part
    a = build_parser().parse_args(argv)
    try:
        tr.train_run(_config_from_args(a), a.out, force=a.force, progress=False, log=logger(a.out, blocked))
    except CaeError as e:  # every rank must stop with the same message, none left waiting
        print(f"rank {dist.get_rank()}: cae: error: {e}", flush=True)
        # the stopped run's DDP wrapper can sit in a reference cycle holding the process group;
        # collected here, on every rank at once, it cannot die with running gloo threads at
        # interpreter exit ("terminate called without an active exception": rank exit code -6,
        # seen intermittently)
        gc.collect()
        continue
    if dump:
        torch.save(captured["state"], f"{dump}/rank{dist.get_rank()}.pt")
dist.barrier()
dist.destroy_process_group()
'''


def args(data: Path, out: Path, epochs: int) -> list[str]:
    # float32: the 1- and 2-process runs differ only in summation order, which bf16 would amplify
    return ["train", "--data", str(data), "--limit", "600", "--epochs", str(epochs), "--batch-size", "32",
            "--precision", "fp32", "--device", "cpu", "--out", str(out), "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict:
    root = tmp_path_factory.mktemp("dist")
    data = write_smooth_cifar(root / "cifar-10-batches-bin", per_file=200)
    a, b = root / "A", root / "B"
    assert main(args(data, b, 1)) == 0  # B: one epoch by a single process
    b_rows = runs.read_metrics_csv(b / runs.METRICS)
    (root / "script.py").write_text(SCRIPT)
    # as if the single-process run had been started for 2 epochs and stopped after epoch 1
    (b / runs.TEST_METRICS).unlink()
    cfg = load_config(b / runs.CONFIG)
    cfg.train.epochs = 2
    save_config(cfg, b / runs.CONFIG)
    diverge = [*args(data, root / "D", 1), "--arch", "conv8:none | convout:none", "--lr", "1e20"]
    # the U-Net colorizer normalizes per image (GroupNorm): one process on the whole batch and two on
    # its halves must train alike (with BatchNorm each process would normalize by its own half)
    unet = ["--task", "colorize", "--target", "ycbcr", "--arch", "unet4"]
    assert main([*args(data, root / "U1", 1), *unet]) == 0
    jobs = [(str(root), args(data, a, 1), ""), ("", args(data, b, 2), ""), ("", diverge, ""),
            ("", args(data, root / "L", 1), ""), ("", [*args(data, root / "U2", 1), *unet], ""),
            ("", args(data, root / "W", 2), runs.BEST), ("", args(data, root / "R", 1), runs.TEST_METRICS)]
    with runs.RunLock(root / "L"):  # held by this (live) test process while torchrun tries it
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            str(root / "script.py"), json.dumps(jobs)],
                           capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
        locked_files = {p.name for p in (root / "L").iterdir()}
    assert r.returncode == 0, r.stdout + r.stderr
    return {"root": root, "data": data, "A": a, "B": b, "B_rows_single": b_rows, "log": r.stdout + r.stderr,
            "locked_files": locked_files}


def test_ranks_hold_identical_parameters(world: dict) -> None:
    r0, r1 = (torch.load(world["root"] / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    last = runs.load_torch(world["A"] / runs.LAST)["model"]  # written by rank 0
    assert all(torch.equal(r0[k], last[k]) for k in r0)


def test_one_set_of_files(world: dict) -> None:
    names = {p.name for p in world["A"].iterdir()}
    assert names == RUN_FILES, names ^ RUN_FILES
    assert load_config(world["A"] / runs.CONFIG).world_size == 2
    assert runs.read_json(world["A"] / runs.TEST_METRICS)["world_size"] == 2
    lines = (world["A"] / runs.METRICS).read_text().splitlines()
    assert len(lines) == 2  # one header, one epoch: rank 1 wrote nothing
    assert world["log"].count("test  mse") == 3  # one line per finished run (A, B, U2): only rank 0 logs


def test_all_reduced_test_metrics_match_single_process_eval(world: dict) -> None:
    saved = runs.read_json(world["A"] / runs.TEST_METRICS)
    again = eval_run(world["A"], device="cpu")
    for k in ("mse", "psnr", "ssim"):
        assert again[k] == pytest.approx(saved[k], rel=1e-6), k
    assert again["images"] == saved["images"] == 60


def test_two_processes_match_one(world: dict) -> None:
    """Global batch = --batch-size split across ranks, lr unchanged: the same optimisation."""
    two = runs.read_metrics_csv(world["A"] / runs.METRICS)[0]
    one = world["B_rows_single"][0]
    assert two["lr"] == one["lr"]  # same number of steps, same schedule
    for k in ("train_loss", "val_mse"):
        assert two[k] == pytest.approx(one[k], rel=1e-3), k  # only the summation order differs


def test_single_process_run_resumes_under_torchrun(world: dict) -> None:
    rows = runs.read_metrics_csv(world["B"] / runs.METRICS)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0] == world["B_rows_single"][0]
    assert f"resuming {world['B']} after epoch 1" in world["log"]
    assert runs.is_finished(world["B"]) and load_config(world["B"] / runs.CONFIG).world_size == 2


def test_torchrun_run_resumes_in_single_process(world: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = Path(shutil.copytree(world["A"], tmp_path / "A"))
    # as if the 2-process run had been started for 2 epochs and stopped after epoch 1
    (out / runs.TEST_METRICS).unlink()
    cfg = load_config(out / runs.CONFIG)
    cfg.train.epochs = 2
    save_config(cfg, out / runs.CONFIG)
    capsys.readouterr()
    assert main(args(world["data"], out, 2)) == 0
    assert f"resuming {out} after epoch 1" in capsys.readouterr().out
    rows = runs.read_metrics_csv(out / runs.METRICS)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0] == runs.read_metrics_csv(world["A"] / runs.METRICS)[0]
    assert json.loads((out / runs.TEST_METRICS).read_text())["world_size"] == 1


def test_divergence_stops_every_rank_at_the_same_step(world: dict) -> None:
    # both ranks print to the same pipe, so their lines may run together
    found = sorted(re.findall(r"rank (\d): cae: error: (training diverged: .*?\(lr [^)]*\))", world["log"]))
    assert [rank for rank, _ in found] == ["0", "1"], world["log"]
    assert found[0][1] == found[1][1]  # the same epoch, step and lr
    assert not (world["root"] / "D" / runs.LAST).exists() and not (world["root"] / "D" / runs.LOCK).exists()


def test_locked_folder_refused_on_every_rank(world: dict) -> None:
    found = sorted(re.findall(r"rank (\d): cae: error: run folder \S+ is in use by process (\d+)", world["log"]))
    assert found == [("0", str(os.getpid())), ("1", str(os.getpid()))], world["log"]
    assert world["locked_files"] == {runs.LOCK}  # nothing written while it was locked


def test_two_processes_train_the_unet_like_one(world: dict) -> None:
    one, two = (runs.read_metrics_csv(world["root"] / name / runs.METRICS)[0] for name in ("U1", "U2"))
    for k in ("train_loss", "val_mse"):
        assert two[k] == pytest.approx(one[k], rel=1e-3), k  # only the summation order differs
    m1, m2 = (runs.read_json(world["root"] / name / runs.TEST_METRICS) for name in ("U1", "U2"))
    assert m2["world_size"] == 2 and m2["mse"] == pytest.approx(m1["mse"], rel=1e-3)


@pytest.mark.parametrize("run,name", [("W", runs.BEST), ("R", runs.TEST_METRICS)])
def test_a_file_rank0_cannot_write_stops_every_rank_with_its_line(world: dict, run: str, name: str) -> None:
    """W: best.pt of epoch 1 (a checkpoint); R: test_metrics.json (the result, after training)."""
    out = world["root"] / run
    found = sorted(re.findall(r"rank (\d): cae: error: (\S+: Is a directory; check the path, its permissions and the "
                              r"free disk space)", world["log"]))
    found = [(rank, line) for rank, line in found if line.startswith(str(out / name))]
    assert [rank for rank, _ in found] == ["0", "1"] and found[0][1] == found[1][1], world["log"]
    assert not runs.is_finished(out) and not (out / runs.LOCK).exists()
