"""`cae bench`: the two loops compute the same thing, precision falls back safely, the CLI writes its figures."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import cae.core.train
from cae.experiments import bench
from cae.cli import main
from cae.core.config import RunConfig
from cae.core.data import Cifar10, DEFAULT_CLASSES
from cae.errors import CaeError
from cae.core.train import make_model, prepare, resolve_precision
from conftest import require

REQUIRED_KEYS = ("train_images_per_s", "naive_train_images_per_s", "train_speedup", "eval_images_per_s",
                 "naive_eval_images_per_s", "eval_speedup", "peak_gflops", "peak_fraction", "peak_rss_mb",
                 "batch_size", "precision", "threads", "torch", "device")
CIFAR = os.environ.get("CAE_DATA_DIR", "/work/shared/datasets/cifar-10-batches-bin")


def _synthetic(n: int = 600) -> Cifar10:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return Cifar10(images, torch.arange(n) % 10, DEFAULT_CLASSES, Path("<test>"))


@pytest.fixture(autouse=True)
def small_matmul(monkeypatch: pytest.MonkeyPatch) -> None:
    """The peak-FLOP/s probe on small matrices: the figure is not under test, the time is."""
    monkeypatch.setattr(bench, "PEAK_MATMUL_N", 256)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_cifar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CIFAR-10 anywhere (and no download): the benchmark must use synthetic images."""
    monkeypatch.delenv("CAE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_fast_and_naive_steps_agree_in_fp32() -> None:
    """Same weights, same batch: the package's step and the tutorial step give the same loss and update."""
    cfg = RunConfig()
    cfg.data.normalize = "unit"  # the naive loop feeds [0, 1] inputs
    cfg.train.precision = "fp32"
    cfg.train.device = "cpu"
    p = prepare(cfg, _synthetic())
    assert p.amp is None
    fast = make_model(cfg, p.task, p.device)  # channels_last
    naive = bench.naive_model(cfg.arch, cfg.train.seed, p.device)  # NCHW
    for a, b in zip(fast.state_dict().values(), naive.state_dict().values()):
        assert torch.equal(a, b)
    lr = 1e-3
    fast_opt = torch.optim.Adam(fast.parameters(), lr=lr)
    naive_opt = torch.optim.Adam(naive.parameters(), lr=lr)
    batch = p.train[:32]
    for _ in range(2):  # the second step also compares the state after one update
        lf = bench.train_step(p, fast, fast_opt, batch, lr)
        ln = bench.naive_step(naive, naive_opt, nn.MSELoss(), batch.float() / 255)
        assert lf.item() == pytest.approx(ln.item(), rel=1e-5, abs=1e-7)
    for a, b in zip(fast.parameters(), naive.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_auto_precision_is_bf16_where_the_cpu_runs_it_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cae.core.device, "bf16_supported", lambda device: True)
    assert resolve_precision("auto", torch.device("cpu")) is torch.bfloat16
    assert resolve_precision("fp32", torch.device("cpu")) is None


def test_auto_precision_is_fp32_where_bf16_is_not_native(monkeypatch: pytest.MonkeyPatch, no_cifar: None) -> None:
    monkeypatch.setattr(cae.core.device, "bf16_supported", lambda device: False)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None
    with pytest.raises(CaeError, match="bf16"):
        resolve_precision("bf16", cpu)
    with pytest.raises(CaeError, match="bf16"):
        bench.run_bench(steps=1, precision="bf16", n_synthetic=600, log=lambda s: None)
    r = bench.run_bench(steps=2, eval_images=100, n_synthetic=600, log=lambda s: None)
    assert r["precision"] == "float32" and r["synthetic"]


def test_cli_bench_writes_all_figures(tmp_path: Path, no_cifar: None, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "f.json"
    assert main(["bench", "--steps", "3", "--precision", "fp32", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "train images/s" in printed
    r = json.loads(out.read_text())
    for k in REQUIRED_KEYS:
        assert k in r, k
    for k in REQUIRED_KEYS[:10]:
        assert math.isfinite(r[k]) and r[k] > 0, (k, r[k])
    assert r["batch_size"] == RunConfig().train.batch_size and r["precision"] == "float32"
    assert r["train_speedup"] == pytest.approx(r["train_images_per_s"] / r["naive_train_images_per_s"])
    assert r["steps"] == 3 and r["eval_images"] <= 10_000
    assert r["fast_path"] is True and "fast path               on" in printed
    assert "cpu: " in printed and set(r) >= {"cpu_avx2", "cpu_avx512", "cpu_avx512_bf16", "cpu_amx"}
    assert len(r["train_rounds"]) == 3 and r["train_speedup_median"] > 0  # 3 steps: 3 alternating rounds


def test_round_spread_is_the_widest_loop_spread() -> None:
    rounds = [{"cae": 100.0, "naive": 50.0}, {"cae": 150.0, "naive": 40.0}, {"cae": 120.0, "naive": 60.0}]
    assert bench.round_spread(rounds) == pytest.approx(1.5)  # cae 150/100 = naive 60/40
    rounds[1]["cae"] = 250.0
    assert bench.round_spread(rounds) == pytest.approx(2.5)


def test_bench_warns_when_its_rounds_disagree(monkeypatch: pytest.MonkeyPatch, no_cifar: None) -> None:
    """A machine whose speed moved while the rounds ran is named in the output, a steady one is not."""
    for spread, warned in ((2.0, True), (1.1, False)):
        monkeypatch.setattr(bench, "round_spread", lambda rounds, s=spread: s)
        lines: list[str] = []
        r = bench.run_bench(steps=2, eval_images=100, n_synthetic=600, log=lines.append)
        assert r["train_rounds_spread"] == spread
        assert any("2.0x apart" in line and "unreliable" in line for line in lines) == warned


def test_bench_refuses_zero_steps() -> None:
    with pytest.raises(CaeError, match="steps"):
        bench.run_bench(steps=0)


@pytest.mark.slow
def test_bench_on_real_cifar_subset() -> None:
    require(Path(CIFAR).is_dir(), f"CIFAR-10 not found at {CIFAR} (set CAE_DATA_DIR)")
    lines: list[str] = []
    r = bench.run_bench(steps=2, data_dir=CIFAR, eval_images=200, limit=600, log=lines.append)
    assert not r["synthetic"] and r["data"].startswith("CIFAR-10")
    assert 0 < r["eval_mse"] < 1 and 0 < r["peak_fraction"] < 1


def test_wrong_data_folder_is_an_error_not_synthetic(tmp_path: Path) -> None:
    with pytest.raises(CaeError, match="does not exist"):
        bench.run_bench(steps=1, data_dir=str(tmp_path / "missing"), log=lambda s: None)


_FAULTS_SNIPPET = """
import resource, sys, torch
from cae.core.train import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(10):  # one activation of an evaluation batch of ~1,100 images (36 MB), allocated and freed
    before = faults()
    torch.ones(9 << 20)
    counts.append(faults() - before)
print(*counts)
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_activations_are_reused_without_page_faults() -> None:
    """After `keep_freed_memory`, repeated batches reuse the freed block instead of faulting in fresh
    pages each time (glibc's default unmaps blocks over 32 MB: ~9,200 faults per 36 MB batch). The
    first few batches may still page in while the heap's layout settles (1-4 seen), not later ones."""
    paged = {}
    for mode in ("default", "tuned"):
        out = subprocess.run([sys.executable, "-c", _FAULTS_SNIPPET, mode], capture_output=True, text=True,
                             check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        paged[mode] = [int(n) > 1000 for n in out.stdout.split()]  # whether each batch paged in its block
    assert sum(paged["default"]) >= 9 and not any(paged["tuned"][5:]), paged


def test_prepared_splits_are_channels_last_with_the_same_images() -> None:
    """The splits are gathered straight into channels_last (what every batch needs), unchanged."""
    data = _synthetic()
    cfg = RunConfig()
    cfg.train.device = "cpu"
    p = prepare(cfg, data)
    for name, split in (("train", p.train), ("val", p.val), ("test", p.test)):
        assert split.is_contiguous(memory_format=torch.channels_last), name
        assert torch.equal(split, data.images[torch.as_tensor(p.split[name])]), name
