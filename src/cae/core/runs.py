"""The run folder: its layout, atomic writes, a lock against concurrent writers, loading.

A run folder holds:
  config.toml         the exact RunConfig used
  split.npz           train/val/test indices into the pooled 60,000 images
  metrics.csv         epoch, train_loss, val_mse, lr, seconds (one row per finished epoch;
                      train_loss is the loss training minimises, named by test_metrics.json's
                      `loss`: 'mse', or 'cross_entropy' for a chroma classifier; val_mse on the
                      first train.val_subset validation images when that is set)
  last.pt             resume state of the last finished epoch (model, optimizer, epoch, rows,
                      and the precision and device its epochs ran in)
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
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cae.errors import CaeError

try:
    import fcntl
except ImportError:  # Windows: everything but locking a run folder works (`RunLock.acquire` says so)
    fcntl = None

CONFIG = "config.toml"
SPLIT = "split.npz"
METRICS = "metrics.csv"
LAST = "last.pt"
BEST = "best.pt"
TEST_METRICS = "test_metrics.json"
LOCK = ".lock"
METRIC_FIELDS = ("epoch", "train_loss", "val_mse", "lr", "seconds", "unstable")
# columns of older run folders, read under their current names (their training loss was named
# train_mse even where it was a classifier's cross-entropy)
RENAMED_FIELDS = {"train_mse": "train_loss"}
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"  # cae/weights: shipped run folders
SHIPPED_FILES = ("best.pt", "config.toml", "test_metrics.json", "normalization.json", "decoding.json")


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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:  # named by the file written, not its temporary one
            raise OSError(e.errno, e.strerror, str(path)) from e
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


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """`rows` as CSV with a header of `columns` (other keys left out), written atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    write_csv(path, rows, METRIC_FIELDS)


def read_metrics_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        # a blank cell: a column the run's first epochs were written without (resumed across versions)
        return [current_row({k: (int(v) if k in ("epoch", "unstable") else float(v)) for k, v in row.items() if v != ""})
                for row in csv.DictReader(f)]


def current_row(row: dict) -> dict:
    """A metrics row with the current column names (an older run folder's, renamed)."""
    return {RENAMED_FIELDS.get(k, k): v for k, v in row.items()}


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


class RunLock:
    """An exclusive lock on a run folder, so two processes never write one run.

    It is an `flock` held on the open lock file for the run's lifetime: the kernel grants it to
    one process only, however many race for it, and drops it when its process dies (even by
    SIGKILL), so a lock left by a dead process needs no stale-pid guessing to be taken over.
    The file holds the owner's pid, only to name it in the refusal.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self.held:
            return self
        if fcntl is None:
            raise CaeError("training locks its run folder with fcntl, which this system lacks (Windows); "
                           "run cae train, sweep and reproduce under WSL, Linux or macOS")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise CaeError(f"run folder {self.path.parent} is in use by process {self._owner()}; "
                               "wait for it or use another --out") from None
            except BaseException:
                os.close(fd)
                raise
            if self._still_linked(fd):
                break
            os.close(fd)  # its holder released (unlinked) it after we opened it: lock the new file
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def _still_linked(self, fd: int) -> bool:
        """Whether `fd` is still the file at `self.path`: `release` unlinks the file before it
        unlocks, so a lock won on an unlinked file locks nothing another process can see."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)

    def _owner(self) -> str:
        """The holder's pid from the file; it writes it just after locking, so wait a moment for it."""
        deadline = time.monotonic() + 1.0
        while True:
            try:
                pid = self.path.read_text().strip()
            except OSError:
                pid = ""
            if pid.isdigit() or time.monotonic() > deadline:
                return pid or "(unknown)"
            time.sleep(0.01)

    def release(self) -> None:
        if self._fd is None:
            return
        # unlink while still holding the lock (see `_still_linked`), then let the lock go
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def shipped_run(name: str) -> Path:
    """The folder of shipped weights `name` ('colorizer' or 'reference'), usable as a run folder."""
    d = WEIGHTS / name
    if not (d / BEST).is_file():
        have = sorted(p.name for p in WEIGHTS.iterdir() if (p / BEST).is_file()) if WEIGHTS.is_dir() else []
        raise CaeError(f"no shipped weights named {name!r} in {WEIGHTS}; available: {', '.join(have) or 'none'}")
    return d


def copy_files(src: Path, dest: Path, names: Sequence[str]) -> None:
    """Copy the files `names` that exist in folder `src` into `dest`, each atomically."""
    for name in names:
        if (src / name).is_file():
            atomic_write_bytes(dest / name, (src / name).read_bytes())
