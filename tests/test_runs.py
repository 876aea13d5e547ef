"""Run-folder helpers: atomic writes, the run lock, safe JSON / checkpoint reading."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cae.core import runs
from cae.core.model import build_model
from cae.errors import CaeError


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "result.json"
    runs.write_json(path, {"mse": 1.0})

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(runs.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        runs.write_json(path, {"mse": 2.0})
    monkeypatch.undo()
    assert runs.read_json(path) == {"mse": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left behind


def test_sweep_removes_only_atomic_write_leftovers(tmp_path: Path) -> None:
    (tmp_path / ".metrics.csv.abc123.tmp").write_text("half")
    (tmp_path / ".hidden").write_text("not ours")
    (tmp_path / "notes.tmp").write_text("not ours either")
    (tmp_path / ".dir.tmp").mkdir()
    gone = runs.sweep_temporary_files(tmp_path)
    assert [p.name for p in gone] == [".metrics.csv.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dir.tmp", ".hidden", "notes.tmp"]


def test_atomic_write_interrupted_mid_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.csv"
    runs.write_metrics_csv(path, [{"epoch": 1, "train_loss": 0.5, "val_mse": 0.4, "lr": 0.1, "seconds": 1.0}])
    before = path.read_bytes()

    def interrupted_fsync(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runs.os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        runs.write_metrics_csv(path, [])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert len(list(tmp_path.iterdir())) == 1


def test_metrics_csv_round_trip(tmp_path: Path) -> None:
    rows = [{"epoch": e, "train_loss": 0.1 / e, "val_mse": 0.2 / e, "lr": 1e-3, "seconds": 1.5, "unstable": e - 1}
            for e in (1, 2)]
    runs.write_metrics_csv(tmp_path / "m.csv", rows)
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == "epoch,train_loss,val_mse,lr,seconds,unstable"
    assert runs.read_metrics_csv(tmp_path / "m.csv") == rows


def test_metrics_csv_of_an_older_run_folder_reads_under_the_current_names(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("epoch,train_mse,val_mse,lr,seconds\n1,4.2,0.0057,0.01,3.5\n")
    assert runs.read_metrics_csv(tmp_path / "m.csv") == [
        {"epoch": 1, "train_loss": 4.2, "val_mse": 0.0057, "lr": 0.01, "seconds": 3.5}]


@pytest.mark.parametrize("loss,train_axis", [("mse", "MSE (pixels in [0, 1])"),
                                             ("cross_entropy", "training cross-entropy over the chroma bins (nats)")])
def test_loss_plot_names_the_training_loss(loss: str, train_axis: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A classifier's training loss is a cross-entropy: it is not drawn on the MSE axis."""
    from cae.core import plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
    rows = [{"epoch": e, "train_loss": 4.0 / e, "val_mse": 0.006 / e, "lr": 1e-3, "seconds": 1.0} for e in (1, 2)]
    plots.plot_loss(rows, tmp_path / "loss.png", loss=loss)
    axes = figures[0].axes
    lines = {line.get_label(): ax.get_ylabel() for ax in axes for line in ax.get_lines()}
    train = next(label for label in lines if label.startswith("training"))
    assert lines[train] == train_axis and ("cross-entropy" in train) == (loss == "cross_entropy")
    assert lines["validation MSE"] == "MSE (pixels in [0, 1])"


def test_load_history_reads_a_runs_epochs_and_names_a_folder_without_them(tmp_path: Path) -> None:
    """cae.load_history: the error curve of a run folder, typed; a folder with no finished epoch
    is one line naming it, not a FileNotFoundError."""
    import cae

    rows = [{"epoch": 1, "train_loss": 0.03, "val_mse": 0.02, "lr": 1e-3, "seconds": 2.5},
            {"epoch": 2, "train_loss": 0.01, "val_mse": 0.015, "lr": 1e-5, "seconds": 2.0}]
    runs.write_metrics_csv(tmp_path / runs.METRICS, rows)
    assert cae.load_history(tmp_path) == rows
    with pytest.raises(CaeError, match=f"{tmp_path / 'empty'} has no metrics.csv"):
        cae.load_history(tmp_path / "empty")


def test_split_round_trip_and_corrupt(tmp_path: Path) -> None:
    split = {k: np.arange(i, i + 5) for i, k in enumerate(("train", "val", "test"))}
    runs.save_split(tmp_path / "s.npz", split)
    back = runs.load_split(tmp_path / "s.npz")
    assert all((back[k] == split[k]).all() for k in split)
    (tmp_path / "s.npz").write_bytes(b"junk")
    with pytest.raises(CaeError, match=r"s\.npz is corrupt"):
        runs.load_split(tmp_path / "s.npz")
    with pytest.raises(CaeError, match="not found"):
        runs.load_split(tmp_path / "none.npz")


# ----------------------------------------------------------------------------- read_json / load_torch
def test_read_json_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "test_metrics.json"
    with pytest.raises(CaeError, match="test_metrics.json not found"):
        runs.read_json(path)
    path.write_text("{not json")
    with pytest.raises(CaeError, match=r"test_metrics\.json is corrupt"):
        runs.read_json(path)
    path.write_bytes(b"\x80\x81\xff")
    with pytest.raises(CaeError, match=r"test_metrics\.json is corrupt"):
        runs.read_json(path)
    runs.write_json(path, {"psnr": 20.0})
    with pytest.raises(CaeError, match=r"test_metrics\.json lacks key\(s\) mse"):
        runs.read_json(path, ("mse", "psnr"))
    path.write_text("[1, 2]")
    with pytest.raises(CaeError, match="lacks key"):
        runs.read_json(path, ("mse",))


def test_load_torch_refuses_garbage(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    runs.save_torch(path, {"w": torch.ones(2)})
    assert torch.equal(runs.load_torch(path)["w"], torch.ones(2))
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CaeError, match=r"best\.pt is corrupt"):
        runs.load_torch(path)
    with pytest.raises(CaeError, match="not found"):
        runs.load_torch(tmp_path / "none.pt")


def test_load_torch_refuses_pickled_objects(tmp_path: Path) -> None:
    """weights_only=True: a checkpoint holding an arbitrary object is refused, not executed."""
    path = tmp_path / "evil.pt"
    torch.save({"obj": Path("/etc/passwd")}, path)
    with pytest.raises(CaeError, match=r"evil\.pt"):
        runs.load_torch(path)


# ----------------------------------------------------------------------------- RunLock
# Forked children share the imports already made here (a fresh interpreter would spend seconds
# importing torch per process) and race on their own open file, as separate cae processes do.
FORK = multiprocessing.get_context("fork")


def _hold(run_dir: Path, locked: Any) -> None:
    """Child: take the lock, say so, keep it until killed. (It waits in a plain sleep: a process
    SIGKILLed inside a multiprocessing Event's wait can leave that Event locked for good.)"""
    runs.RunLock(run_dir).acquire()
    locked.set()
    time.sleep(120)


@pytest.fixture
def holder(tmp_path: Path):  # noqa: ANN201 - a live process holding tmp_path's lock
    locked = FORK.Event()
    proc = FORK.Process(target=_hold, args=(tmp_path, locked))
    proc.start()
    assert locked.wait(30), "the holder never took the lock"
    yield proc
    proc.kill()
    proc.join(30)


def test_lock_refuses_while_owner_lives(tmp_path: Path, holder: Any) -> None:
    with pytest.raises(CaeError, match=rf"in use by process {holder.pid}; wait for it or use another --out"):
        runs.RunLock(tmp_path).acquire()
    assert (tmp_path / runs.LOCK).read_text() == str(holder.pid)  # the owner's lock is left alone


def test_lock_of_a_sigkilled_process_is_taken_over(tmp_path: Path, holder: Any) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    assert (tmp_path / runs.LOCK).read_text() == str(holder.pid)  # the file outlives its process
    with runs.RunLock(tmp_path) as lock:
        assert lock.held and (tmp_path / runs.LOCK).read_text() == str(os.getpid())
    assert not (tmp_path / runs.LOCK).exists()


@pytest.mark.parametrize("content", ["", "not a pid", "999999999", "{pid}"])
def test_unlocked_leftover_file_is_taken_over(tmp_path: Path, content: str) -> None:
    """Only a held flock counts: a file nobody locks (whatever pid it names, even ours) is free."""
    (tmp_path / runs.LOCK).write_text(content.format(pid=os.getpid()))
    lock = runs.RunLock(tmp_path).acquire()
    assert (tmp_path / runs.LOCK).read_text() == str(os.getpid())
    lock.release()
    assert not (tmp_path / runs.LOCK).exists()


def test_release_lets_another_take_it(tmp_path: Path) -> None:
    first, second = runs.RunLock(tmp_path), runs.RunLock(tmp_path)  # two open files: they exclude each other
    first.acquire()
    with pytest.raises(CaeError, match=rf"in use by process {os.getpid()}"):
        second.acquire()
    first.release()
    second.acquire()
    assert second.held and not first.held
    second.release()


def test_lock_released_on_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with runs.RunLock(tmp_path):
            assert (tmp_path / runs.LOCK).exists()
            raise RuntimeError("boom")
    assert not (tmp_path / runs.LOCK).exists()


def _race_once(run_dir: Path, start: Any, results: Any, done: Any) -> None:
    """Child: wait for the others, try the lock once, report, and hold a won lock until all reported."""
    start.wait(30)
    try:
        runs.RunLock(run_dir).acquire()
    except CaeError:
        results.put("refused")
        return
    results.put("won")
    done.wait(60)


@pytest.mark.parametrize("leftover", [None, "999999999"])
def test_racing_processes_exactly_one_wins(tmp_path: Path, leftover: str | None) -> None:
    """8 processes start at once (on a free folder, or one with a dead process's lock file: the
    case where the old stale-pid takeover let two win): exactly one gets the lock."""
    if leftover is not None:
        (tmp_path / runs.LOCK).write_text(leftover)
    n = 8
    start, done, results = FORK.Barrier(n), FORK.Event(), FORK.Queue()
    procs = [FORK.Process(target=_race_once, args=(tmp_path, start, results, done)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        outcomes = sorted(results.get(timeout=60) for _ in range(n))
    finally:
        done.set()
        for p in procs:
            p.join(30)
    assert outcomes == ["refused"] * (n - 1) + ["won"]
    assert all(p.exitcode == 0 for p in procs)


def _churn(run_dir: Path, rounds: int, holders: Any, worst: Any) -> None:
    """Child: take the lock `rounds` times, retrying when refused; count how many hold it at once."""
    for _ in range(rounds):
        lock = runs.RunLock(run_dir)
        while True:
            try:
                lock.acquire()
                break
            except CaeError:
                time.sleep(0.001)
        with holders.get_lock():
            holders.value += 1
            worst.value = max(worst.value, holders.value)
        time.sleep(0.001)
        with holders.get_lock():
            holders.value -= 1
        lock.release()  # unlinks the file while others hold it open: they must not win a dead file


def test_lock_excludes_under_acquire_release_churn(tmp_path: Path) -> None:
    holders, worst = FORK.Value("i", 0), FORK.Value("i", 0)
    procs = [FORK.Process(target=_churn, args=(tmp_path, 25, holders, worst)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    assert worst.value == 1
    assert not (tmp_path / runs.LOCK).exists()


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    """mkstemp creates 0600 files; results must be readable like any file the user writes."""
    umask = os.umask(0o022)
    try:
        runs.write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(umask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def test_without_fcntl_the_package_works_and_only_training_is_refused(tmp_path: Path) -> None:
    """On a system without fcntl and resource (Windows) `import cae`, models, colorizing and the
    bench's module work; taking a run folder's lock is one line saying why not, and where cae trains."""
    script = f"""
import sys
sys.modules["fcntl"] = sys.modules["resource"] = None  # `import fcntl` raises ImportError, as on Windows
import math, torch, cae
from cae.experiments.bench import peak_rss_mb
assert math.isnan(peak_rss_mb())  # `cae bench` imports and runs without its memory figure
from cae.core import runs
from cae.errors import CaeError
assert runs.fcntl is None
print(sum(p.numel() for p in cae.build_model("reference").parameters()))
print(tuple(cae.Colorizer.load()(torch.rand(3, 40, 56)).shape))
try:
    runs.RunLock({str(tmp_path)!r}).acquire()
except CaeError as e:
    print(e)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    params, shape, refusal = done.stdout.strip().splitlines()
    assert int(params) == sum(p.numel() for p in build_model("reference").parameters())
    assert shape == "(3, 40, 56)"
    assert refusal == ("training locks its run folder with fcntl, which this system lacks (Windows); "
                       "run cae train, sweep and reproduce under WSL, Linux or macOS")
    assert not (tmp_path / runs.LOCK).exists()
