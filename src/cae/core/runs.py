"""The run folder: its layout, atomic writes, a lock against concurrent writers, loading.

A run folder holds:
  config.toml         the exact RunConfig used
  split.npz           train/val/test indices into the pooled 60,000 images
  metrics.csv         epoch, train_mse, val_mse, lr, seconds (one row per finished epoch)
  last.pt             resume state of the last finished epoch (model, optimizer, scheduler, RNG)
  best.pt             state_dict of the best-validation epoch
  test_metrics.json   test-split metrics of best.pt; its presence marks the run as finished
  loss.png, samples.png
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cae.errors import CaeError

CONFIG = "config.toml"
SPLIT = "split.npz"
METRICS = "metrics.csv"
LAST = "last.pt"
BEST = "best.pt"
TEST_METRICS = "test_metrics.json"
LOCK = ".lock"
METRIC_FIELDS = ("epoch", "train_mse", "val_mse", "lr", "seconds")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A reader (or a resumed run) sees either the old file or the new one, never half of it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sweep_temporary_files(folder: Path) -> list[Path]:
    """Delete the temporary files `atomic_write_bytes` leaves when its process is killed (SIGKILL,
    power loss) between creating and renaming them. Call it only while holding the folder's
    `RunLock`, so no writer is mid-write. Returns what it deleted."""
    gone = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            gone.append(tmp)
    return gone


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, required: tuple[str, ...] = ()) -> dict:
    """Read a results JSON; a corrupt file or a missing key is a `CaeError` naming the file."""
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CaeError(f"{path} not found; run the step that writes it first") from None
    except (ValueError, UnicodeDecodeError):
        raise CaeError(f"{path} is corrupt (not JSON); delete it or rerun with --force") from None
    missing = [k for k in required if not isinstance(d, dict) or k not in d]
    if missing:
        raise CaeError(f"{path} lacks key(s) {', '.join(missing)}; delete it or rerun with --force")
    return d


def save_torch(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_torch(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint safely (`weights_only=True`: tensors and plain containers only)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CaeError(f"checkpoint {path} not found; train the run first") from None
    except Exception as e:
        raise CaeError(f"checkpoint {path} is corrupt or not a cae checkpoint ({type(e).__name__}); "
                       "rerun with --force to start over") from None


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in METRIC_FIELDS})
    atomic_write_text(path, buf.getvalue())


def read_metrics_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def save_split(path: Path, split: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, dtype=np.int64) for k, v in split.items()})
    atomic_write_bytes(path, buf.getvalue())


def load_split(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("train", "val", "test")}
    except FileNotFoundError:
        raise CaeError(f"{path} not found; the run folder is incomplete, rerun with --force") from None
    except Exception:
        raise CaeError(f"{path} is corrupt; rerun with --force to start over") from None


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / TEST_METRICS).is_file()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder, so two processes never write one run.

    The lock file holds the owner's pid; a lock whose process is gone is stale and taken over.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.held = False

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or "0")
                except (ValueError, OSError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise CaeError(f"run folder {self.path.parent} is in use by process {pid}; wait for it "
                                   f"to finish or stop it (a stale lock is removed automatically)") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return self
        raise CaeError(f"could not lock run folder {self.path.parent}; remove {self.path} if no cae process uses it")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
