"""Shared fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class QuickRun:
    """A finished `cae reproduce --quick` folder and how the run went."""

    out: Path
    stdout: str
    seconds: float


def run_cae(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the `cae` CLI in a subprocess (as a user would), capturing its output."""
    return subprocess.run([sys.executable, "-m", "cae", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module")
def one_thread():  # noqa: ANN201 - a generator fixture
    """One intra-op thread: on a busy 2-core machine two spinning OpenMP threads are ~10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def quick_reproduce(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """`cae reproduce --quick` on the real CIFAR-10 subset, run once for the whole session."""
    data = os.environ.get("CAE_DATA_DIR")
    if not data or not Path(data).is_dir():
        pytest.skip("CAE_DATA_DIR is not set to the CIFAR-10 binary folder (.ci/run sets it)")
    out = tmp_path_factory.mktemp("reproduce") / "quick"
    t0 = time.perf_counter()
    proc = run_cae("reproduce", "--quick", "--out", str(out))
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"cae reproduce --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    print(f"\ncae reproduce --quick took {seconds:.0f}s")
    return QuickRun(out, proc.stdout, seconds)
