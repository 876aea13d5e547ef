"""Run-folder helpers: atomic writes, the run lock, safe JSON / checkpoint reading."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cae.core import runs
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
    runs.write_metrics_csv(path, [{"epoch": 1, "train_mse": 0.5, "val_mse": 0.4, "lr": 0.1, "seconds": 1.0}])
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
    rows = [{"epoch": e, "train_mse": 0.1 / e, "val_mse": 0.2 / e, "lr": 1e-3, "seconds": 1.5} for e in (1, 2)]
    runs.write_metrics_csv(tmp_path / "m.csv", rows)
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == "epoch,train_mse,val_mse,lr,seconds"
    assert runs.read_metrics_csv(tmp_path / "m.csv") == rows


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
@pytest.fixture
def live_pid():  # noqa: ANN201 - a pid of a process that is alive while the test runs
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_lock_refuses_while_owner_lives(tmp_path: Path, live_pid: int) -> None:
    (tmp_path / runs.LOCK).write_text(str(live_pid))
    with pytest.raises(CaeError, match=rf"in use by process {live_pid}"):
        runs.RunLock(tmp_path).acquire()
    assert (tmp_path / runs.LOCK).read_text() == str(live_pid)  # the owner's lock is left alone


def test_stale_lock_taken_over(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # its pid is now (almost certainly) free
    (tmp_path / runs.LOCK).write_text(str(proc.pid))
    with runs.RunLock(tmp_path) as lock:
        assert lock.held and (tmp_path / runs.LOCK).read_text() == str(os.getpid())
    assert not (tmp_path / runs.LOCK).exists()


def test_garbage_lock_is_stale(tmp_path: Path) -> None:
    (tmp_path / runs.LOCK).write_text("not a pid")
    lock = runs.RunLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / runs.LOCK).exists()


def test_lock_released_on_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with runs.RunLock(tmp_path):
            assert (tmp_path / runs.LOCK).exists()
            raise RuntimeError("boom")
    assert not (tmp_path / runs.LOCK).exists()



def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    """mkstemp creates 0600 files; results must be readable like any file the user writes."""
    umask = os.umask(0o022)
    try:
        runs.write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(umask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
