"""Reliability: interruption and exact resume, corrupt run state, divergence, concurrent
writers, determinism, and two security invariants of the source tree.

Training runs on a small synthetic CIFAR-10 folder (2,400 smooth random images) so the test is
fast and independent of the real files; subprocesses run `python -m cae train` for real.
Every process uses one intra-op thread: results are bit-identical only for the same thread
count, and on a busy 2-core machine one thread is also far faster than two spinning ones.
"""

from __future__ import annotations

import ast
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from cae.core import runs
from cae.cli import main
from cae.core.tasks import Task
from helpers import write_smooth_cifar

SRC = Path(__file__).resolve().parents[1] / "src" / "cae"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
IGNORED = {"seconds", "train_seconds"}  # wall-clock figures differ between runs


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_smooth_cifar(tmp_path_factory.mktemp("data") / "cifar-10-batches-bin")


EPOCHS = 5  # interruption tests signal after epoch 1: the other four leave a wide window (~1 s)


def train_args(syn: Path, out: Path, precision: str = "auto", epochs: int = EPOCHS, limit: int = 1000,
               arch: str | None = None, batch_size: int = 16) -> list[str]:
    args = ["train", "--data", str(syn), "--limit", str(limit), "--batch-size", str(batch_size),
            "--epochs", str(epochs),
            "--device", "cpu", "--precision", precision, "--out", str(out), "--quiet"]
    return args + (["--arch", arch] if arch else [])


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cae", *args], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {path.name} appeared: {proc.communicate()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.02)


def comparable(run: Path) -> tuple[list[dict], dict]:
    rows = [{k: v for k, v in r.items() if k not in IGNORED} for r in runs.read_metrics_csv(run / runs.METRICS)]
    result = {k: v for k, v in runs.read_json(run / runs.TEST_METRICS).items() if k not in IGNORED}
    return rows, result


@pytest.fixture(scope="module")
def reference(syn: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uninterrupted 3-epoch runs, one per precision, trained in this process."""
    out = {}
    for precision in ("fp32", "auto"):
        out[precision] = tmp_path_factory.mktemp("ref") / precision
        assert main(train_args(syn, out[precision], precision)) == 0
    return out


# ----------------------------------------------------------------------------- determinism
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_same_seed_same_metrics(precision: str, syn: Path, reference: dict[str, Path], tmp_path: Path) -> None:
    """The same command twice gives bit-identical metrics (auto = bf16 autocast where native)."""
    assert main(train_args(syn, tmp_path / "again", precision)) == 0
    assert comparable(tmp_path / "again") == comparable(reference[precision])


def test_other_seed_other_metrics(syn: Path, reference: dict[str, Path], tmp_path: Path) -> None:
    assert main([*train_args(syn, tmp_path / "s1", "fp32", epochs=1), "--seed", "1"]) == 0
    assert comparable(tmp_path / "s1")[0][0] != comparable(reference["fp32"])[0][0]


# ----------------------------------------------------------------------------- interruption
def stop_and_check(proc: subprocess.Popen, sig: int, out: Path) -> int:
    """Send `sig`, check the way the process ended; return the number of epochs it saved."""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert not runs.is_finished(out), "the run finished before the signal; the test needs a longer epoch"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        assert (out / runs.LOCK).exists()  # a dead owner's lock: the rerun must take it over
    else:
        assert proc.returncode == 130
        assert "Traceback" not in err and "resume" in err and len(err.strip().splitlines()) == 1, err
        assert not (out / runs.LOCK).exists()  # released on the way out
    done = len(runs.read_metrics_csv(out / runs.METRICS))
    assert 1 <= done < EPOCHS
    return done


def resume_and_compare(args: list[str], out: Path, done: int, ref: Path, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert main(args) == 0  # the same command again
    assert f"resuming {out} after epoch {done}" in capsys.readouterr().out
    assert comparable(out) == comparable(ref)  # bit-identical to the uninterrupted run
    assert not (out / runs.LOCK).exists()


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_exact(syn: Path, reference: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    args = train_args(syn, out, "fp32")
    proc = start(args)
    wait_for(out / runs.LAST, proc)  # epoch 1 is saved: stop it in the middle of epoch 2
    done = stop_and_check(proc, signal.SIGKILL, out)
    # what a kill between mkstemp and rename leaves behind (the timing is too narrow to hit here)
    leftover = out / ".last.pt.k1ll3d.tmp"
    leftover.write_bytes(b"half a checkpoint")
    resume_and_compare(args, out, done, reference["fp32"], capsys)
    assert not leftover.exists() and not list(out.glob(".*.tmp"))  # swept under the lock


@pytest.mark.slow
def test_concurrent_writer_refused_then_sigterm_and_resume(syn: Path, reference: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    args = train_args(syn, out, "auto")
    proc = start(args)
    try:
        wait_for(out / runs.LOCK, proc)
        capsys.readouterr()
        assert main(args) == 2  # a second writer while the first is alive
        err = capsys.readouterr().err
        assert f"in use by process {proc.pid}" in err and len(err.strip().splitlines()) == 1, err
        wait_for(out / runs.LAST, proc)
    finally:
        done = stop_and_check(proc, signal.SIGTERM, out)
    resume_and_compare(args, out, done, reference["auto"], capsys)


def test_ctrl_c_in_process_then_resume_is_exact(syn: Path, reference: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT (Ctrl-C) delivered to this very process while it trains."""
    out = tmp_path / "run"
    args = train_args(syn, out, "fp32")
    running = threading.Event()
    save_torch = runs.save_torch

    def save_then_linger(path: Path, obj: object) -> None:
        save_torch(path, obj)
        if path.name == runs.LAST:
            time.sleep(2)  # the signal lands here, mid-run: the remaining epochs take ~0.2 s

    monkeypatch.setattr(runs, "save_torch", save_then_linger)

    def interrupt_after_first_epoch() -> None:
        while running.is_set() and not (out / runs.LAST).exists():
            time.sleep(0.01)
        if running.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    handler, int_handler = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    # a shell's background job starts with SIGINT ignored: give this process Python's own handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    running.set()
    watcher = threading.Thread(target=interrupt_after_first_epoch, daemon=True)
    watcher.start()
    try:
        code = main(args)
    finally:
        running.clear()
        watcher.join()
        signal.signal(signal.SIGTERM, handler)  # cli.main installs its own
        signal.signal(signal.SIGINT, int_handler)
    assert code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "resume" in err and len(err.strip().splitlines()) == 1, err
    assert not runs.is_finished(out) and not (out / runs.LOCK).exists()
    resume_and_compare(args, out, len(runs.read_metrics_csv(out / runs.METRICS)), reference["fp32"], capsys)


def test_full_disk_mid_run_is_one_line_then_resume_is_exact(syn: Path, reference: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills while epoch 2 is saved: one line naming the file and the fix, exit 2, the
    lock released, epoch 1 kept, and the same command later finishes the run exactly."""
    out = tmp_path / "run"
    args = train_args(syn, out, "fp32")
    write = runs.atomic_write_bytes
    saved = []

    def disk_full_at_second_checkpoint(path: Path, data: bytes) -> None:
        if Path(path).name == runs.LAST:
            saved.append(path)
            if len(saved) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write(path, data)

    monkeypatch.setattr(runs, "atomic_write_bytes", disk_full_at_second_checkpoint)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{out / runs.LAST}: No space left on device" in err and "free disk space" in err
    assert not runs.is_finished(out) and not (out / runs.LOCK).exists()
    monkeypatch.setattr(runs, "atomic_write_bytes", write)
    resume_and_compare(args, out, 1, reference["fp32"], capsys)


@pytest.mark.parametrize("command", [["train", "--limit", "600", "--epochs", "1"], ["sweep", "architecture"],
                                     ["colorize", "photo.png"]])
def test_an_out_folder_that_cannot_be_made_is_one_line(command: list[str], syn: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("photo.png").write_bytes(b"")  # never read: the output folder fails first
    Path("a-file").write_text("")
    assert main([*command, "--data", str(syn), "--out", "a-file/out"] if command[0] != "colorize"
                else [*command, "--out", "a-file/out"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("cae: error: a-file/out: Not a directory; check the path, its permissions and the free "
                           "disk space"), err


# ----------------------------------------------------------------------------- corrupt state
@pytest.fixture(scope="module")
def small_run(syn: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small") / "run"
    assert main(train_args(syn, out, "fp32", epochs=2, limit=600, batch_size=32)) == 0
    return out


def copy_run(small_run: Path, tmp_path: Path, finished: bool) -> Path:
    out = Path(shutil.copytree(small_run, tmp_path / "run"))
    if not finished:
        (out / runs.TEST_METRICS).unlink()
    return out


def error_of(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong-content"])
def test_corrupt_last_checkpoint(damage: str, small_run: Path, syn: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    out = copy_run(small_run, tmp_path, finished=False)
    last = out / runs.LAST
    raw = last.read_bytes()
    if damage == "truncate":
        last.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        last.write_bytes(os.urandom(len(raw)))
    elif damage == "empty":
        last.write_bytes(b"")
    else:
        runs.save_torch(last, {"model": {}})  # loads, but is not a resume checkpoint
    before = (out / runs.METRICS).read_bytes()
    args = train_args(syn, out, "fp32", epochs=2, limit=600, batch_size=32)
    err = error_of(capsys, args)
    assert str(last) in err and "--force" in err
    assert (out / runs.METRICS).read_bytes() == before and not runs.is_finished(out)  # no silent retrain
    if damage == "truncate":  # --force starts over (once is enough: it deletes the state first)
        assert main([*args, "--force"]) == 0
        assert len(runs.read_metrics_csv(out / runs.METRICS)) == 2 and runs.is_finished(out)


def test_corrupt_best_checkpoint(small_run: Path, syn: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = copy_run(small_run, tmp_path, finished=True)
    (out / runs.BEST).write_bytes(b"PK\x03\x04 not really a zip")
    assert str(out / runs.BEST) in error_of(capsys, ["eval", str(out), "--device", "cpu"])
    (out / runs.TEST_METRICS).unlink()  # unfinished, all epochs done: finishing needs best.pt
    assert str(out / runs.BEST) in error_of(capsys, train_args(syn, out, "fp32", epochs=2, limit=600, batch_size=32))


@pytest.mark.parametrize("content", ['{"psnr": 20.0}', "{garbage", ""])
def test_bad_test_metrics(content: str, small_run: Path, syn: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture) -> None:
    out = copy_run(small_run, tmp_path, finished=True)
    (out / runs.TEST_METRICS).write_text(content)
    err = error_of(capsys, train_args(syn, out, "fp32", epochs=2, limit=600, batch_size=32))
    assert str(out / runs.TEST_METRICS) in err and "--force" in err


@pytest.mark.parametrize("finished", [False, True], ids=["unfinished", "finished"])
def test_other_config_into_same_folder(finished: bool, small_run: Path, syn: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    out = copy_run(small_run, tmp_path, finished=finished)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = train_args(syn, out, "fp32", epochs=2, limit=600, batch_size=32, arch="conv8 pool2 | up2 convout")
    err = error_of(capsys, other)
    assert "does not match" in err and "arch" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    err = error_of(capsys, [*train_args(syn, out, "fp32", epochs=2, limit=600, batch_size=32), "--lr", "0.01"])
    assert "lr" in err
    assert main([*other, "--force"]) == 0
    assert "conv8 pool2 | up2" in (out / runs.CONFIG).read_text()


def test_unfinished_run_asked_for_other_epochs_is_refused(small_run: Path, syn: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """Its one-cycle schedule is laid out over the epochs it started with: resuming it with other
    epochs would rescale the schedule mid-run, so it is refused in one line and nothing changes."""
    out = copy_run(small_run, tmp_path, finished=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    err = error_of(capsys, train_args(syn, out, "fp32", epochs=3, limit=600, batch_size=32))
    assert "was started for 2 epochs and 3 were asked for" in err and "--force" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ----------------------------------------------------------------------------- resume elsewhere
def run_from_elsewhere(small_run: Path, tmp_path: Path, **state_changes: object) -> tuple[Path, str, str]:
    """An unfinished copy of `small_run` whose config says precision 'auto', its last.pt changed
    as if written on another machine; (folder, what 'auto' is here, the other precision)."""
    from cae.core.device import resolve_precision
    from cae.core.train import PRECISION_NAMES

    out = copy_run(small_run, tmp_path, finished=False)
    (out / runs.CONFIG).write_text((out / runs.CONFIG).read_text().replace('precision = "fp32"', 'precision = "auto"'))
    state = runs.load_torch(out / runs.LAST)
    state.update(state_changes)
    state = {k: v for k, v in state.items() if v is not None}
    runs.save_torch(out / runs.LAST, state)
    here = PRECISION_NAMES[resolve_precision("auto", torch.device("cpu"))]
    return out, here, "bfloat16" if here == "float32" else "float32"


def test_resume_in_another_precision_is_refused_in_one_line(small_run: Path, syn: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    """'auto' is bf16 on a CPU with native bf16 and fp32 elsewhere: a run started on the one is not
    continued on the other in another precision, silently."""
    out, here, other = run_from_elsewhere(small_run, tmp_path)
    state = runs.load_torch(out / runs.LAST)
    runs.save_torch(out / runs.LAST, {**state, "precision": other, "device": "cpu"})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    err = error_of(capsys, train_args(syn, out, "auto", epochs=2, limit=600, batch_size=32))
    short = {"float32": "fp32", "bfloat16": "bf16"}
    assert f"ran its 2 epoch(s) in {other} on cpu" in err and f"'auto' is {here} on this cpu" in err, err
    assert f"pass --precision {short[other]}" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched


def test_resume_on_another_device_in_the_same_precision_continues(small_run: Path, syn: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    out, here, _ = run_from_elsewhere(small_run, tmp_path)
    state = runs.load_torch(out / runs.LAST)
    runs.save_torch(out / runs.LAST, {**state, "precision": here, "device": "cuda"})
    capsys.readouterr()
    assert main(train_args(syn, out, "auto", epochs=2, limit=600, batch_size=32)) == 0
    assert f"epochs 1-2 ran on cuda, the rest run on cpu in the same precision ({here})" in capsys.readouterr().out
    assert runs.is_finished(out) and runs.read_json(out / runs.TEST_METRICS)["precision"] == here


def test_checkpoint_records_its_precision_and_an_older_one_must_be_told(small_run: Path, syn: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    state = runs.load_torch(small_run / runs.LAST)
    assert (state["precision"], state["device"]) == ("float32", "cpu")  # small_run: --precision fp32
    # as an older version wrote it: no precision, no device, the training loss called train_mse
    old_rows = [{("train_mse" if k == "train_loss" else k): v for k, v in r.items()} for r in state["rows"]]
    out, _, _ = run_from_elsewhere(small_run, tmp_path, precision=None, device=None, rows=old_rows)
    err = error_of(capsys, train_args(syn, out, "auto", epochs=2, limit=600, batch_size=32))
    assert "does not record the precision its 2 epoch(s) ran in" in err and "--precision fp32 or bf16" in err, err
    assert main(train_args(syn, out, "fp32", epochs=2, limit=600, batch_size=32)) == 0  # told: it continues
    assert runs.is_finished(out)
    assert runs.read_metrics_csv(out / runs.METRICS) == runs.read_metrics_csv(small_run / runs.METRICS)


# ----------------------------------------------------------------------------- divergence
def test_divergence_stops_at_once(syn: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A linear network with an absurd learning rate overflows to inf/NaN within two steps."""
    out = tmp_path / "run"
    linear = train_args(syn, out, "fp32", epochs=2, limit=600, batch_size=32, arch="conv8:none | convout:none")
    err = error_of(capsys, [*linear, "--lr", "1e20"])
    assert re.search(r"training diverged: loss (nan|inf|-inf) at epoch 1, step \d+ \(lr [0-9.]+e\+\d+\)", err), err
    assert not (out / runs.LAST).exists() and not (out / runs.LOCK).exists()


def test_divergence_reports_epoch_step_lr(syn: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    steps = 480 // 32  # the 600-image subset trains on 480 images: 15 steps per epoch of 32
    poison_at = steps + 4  # step 4 of epoch 2
    calls = {"train": 0}
    original = Task.predict_rgb

    def poisoned(self: Task, model: torch.nn.Module, images: torch.Tensor, float32: bool = True,
                 guide: torch.Tensor | None = None) -> torch.Tensor:
        pred = original(self, model, images, float32, guide)
        if model.training:
            calls["train"] += 1
            if calls["train"] == poison_at:
                return pred * float("inf")
        return pred

    monkeypatch.setattr(Task, "predict_rgb", poisoned)
    err = error_of(capsys, train_args(syn, tmp_path / "run", "fp32", epochs=3, limit=600, batch_size=32))
    assert "training diverged: loss" in err and "at epoch 2, step 4 (lr " in err, err
    assert len(runs.read_metrics_csv(tmp_path / "run" / runs.METRICS)) == 1  # epoch 1 stays saved


# ----------------------------------------------------------------------------- security
def unsafe_torch_loads(source: str) -> list[int]:
    """Lines where `source` uses torch.load other than as a call with `weights_only=True`: read
    on the syntax tree, so an alias (`import torch as t`, `from torch import load as f`,
    `torch.serialization.load`) or a bare reference (`f = torch.load`) cannot escape."""
    tree = ast.parse(source)
    modules, loads = {"torch"}, set()  # names bound to torch (or torch.serialization) and to its load
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name in ("torch", "torch.serialization")}
        elif isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization"):
            loads |= {a.asname or a.name for a in node.names if a.name == "load"}
            modules |= {a.asname or a.name for a in node.names if a.name == "serialization"}

    def is_load(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in loads
        return isinstance(node, ast.Attribute) and node.attr == "load" and ast.unparse(node.value) in (
            *modules, *(f"{m}.serialization" for m in modules))

    safe = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call) and any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords)}
    return sorted(node.lineno for node in ast.walk(tree) if is_load(node) and id(node) not in safe)


@pytest.mark.parametrize("source,lines", [
    ("import torch\ntorch.load(p, weights_only=True)\n", []),
    ("import torch\ntorch.load(p)\n", [2]),
    ("import torch\ntorch.load(p, weights_only=False)\n", [2]),
    ("from torch import load\nload(p)\n", [2]),  # a regex on "torch.load(" misses these
    ("from torch import load as read\nread(p, map_location='cpu')\n", [2]),
    ("import torch as t\nt.load(p)\n", [2]),
    ("import torch\nread = torch.load\nread(p, weights_only=True)\n", [2]),
    ("from torch import serialization\nserialization.load(p)\n", [2]),
    ("import numpy as np\nnp.load(p)\n", []),
])
def test_the_weights_only_check_sees_through_aliases(source: str, lines: list[int]) -> None:
    assert unsafe_torch_loads(source) == lines


def test_every_torch_load_is_weights_only() -> None:
    for path in SRC.rglob("*.py"):
        assert not unsafe_torch_loads(path.read_text()), f"{path}: torch.load without weights_only=True"


def test_no_pickle_in_src() -> None:
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import\s+(c?pickle|dill)|from\s+(c?pickle|dill)\s+import)", text, re.M), path.name
        assert "allow_pickle=True" not in text, path.name
