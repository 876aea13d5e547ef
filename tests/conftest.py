"""Shared fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


def require(condition: bool, reason: str) -> None:
    """Go on only if `condition` holds: otherwise skip (a local run without the data, browser or
    compiler) or, in CI (env CI set), fail, so CI cannot go green on work it skipped."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing prerequisite fails the run)", pytrace=False)
    pytest.skip(reason)


def _skipped_in_ci(config: pytest.Config) -> int:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return len(reporter.stats.get("skipped", [])) if reporter and os.environ.get("CI") else 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI, any skipped test fails the session: CI reports 0 skipped or goes red."""
    if _skipped_in_ci(session.config) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if n := _skipped_in_ci(terminalreporter.config):
        terminalreporter.section("skipped tests fail CI", sep="=", red=True, bold=True)
        terminalreporter.line(f"{n} test(s) skipped with CI set: every test must run in CI "
                              "(reasons listed below with -rs)", red=True)


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
    """`cae reproduce --quick --frontier` on the real CIFAR-10 subset, run once for the whole session."""
    data = os.environ.get("CAE_DATA_DIR")
    require(bool(data) and Path(data).is_dir(),
            "CAE_DATA_DIR is not set to the CIFAR-10 binary folder (.ci/run sets it)")
    out = tmp_path_factory.mktemp("reproduce") / "quick"
    t0 = time.perf_counter()
    proc = run_cae("reproduce", "--quick", "--frontier", "--out", str(out))
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"cae reproduce --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    print(f"\ncae reproduce --quick took {seconds:.0f}s")
    return QuickRun(out, proc.stdout, seconds)
