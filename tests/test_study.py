"""The architecture study: study files, PCA, correlation, and the sweep runner end to end."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cae.errors import CaeError
from cae.pca import evaluate_pca, fit_pca, reconstruct
from cae.study import COLUMNS, correlation, load_study, load_study_results, run_sweep
from conftest import require

DATA = os.environ.get("CAE_DATA_DIR", "/work/shared/datasets/cifar-10-batches-bin")
TINY_A = "conv4 pool2 conv4 | up2 convout"
TINY_B = "conv4 pool2 conv2 | up2 conv4 convout"


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ----------------------------------------------------------------------------- study files
def test_study_file_defaults_and_overrides(tmp_path):
    p = write(tmp_path, f"""
epochs = 3
[train]
lr = 1e-3
[[variant]]
name = "a"
arch = "{TINY_A}"
axis = "depth"
[[variant]]
name = "b"
arch = "reference"
lr = 5e-4
note = "own lr"
""")
    s = load_study(p)
    a, b = s.variants
    assert (a.cfg.train.epochs, a.cfg.train.lr, a.axis) == (3, 1e-3, "depth")
    assert (b.cfg.train.lr, b.note, b.info.latent_size) == (5e-4, "own lr", 1024)
    s = load_study(p, epochs=1, limit=300, data_dir="/x")  # the CLI flags win
    assert all(v.cfg.train.epochs == 1 and v.cfg.data.limit == 300 and v.cfg.data.dir == "/x" for v in s.variants)


@pytest.mark.parametrize("body, fragment", [
    ('[[variant]]\nname = "ok"\narch = "reference"\n[[variant]]\nname = "bad"\narch = "conv8 pool3 | up3 convout"',
     "variant 'bad' is refused: impossible architecture"),
    ('[[variant]]\nname = "a"\narch = "reference"\nlrr = 1', "unknown key(s) lrr"),
    ('[[variant]]\nname = "a"\narch = "reference"\n[[variant]]\nname = "a"\narch = "reference"', "used twice"),
    ('[[variant]]\nname = "a/b"\narch = "reference"', "folder-safe"),
    ('[[variant]]\nname = "a"', "needs an arch"),
    ('[[variant]]\nname = "a"\narch = "reference"\nlr = -1.0', "lr must be positive"),
    ('epochs = 2', "no [[variant]]"),
    ('epochs = ', "not valid TOML"),
    ('[[variant]]\nname = "pca-64"\narch = "reference"', "reserved"),
])
def test_study_file_refusals(tmp_path, body, fragment):
    with pytest.raises(CaeError) as e:
        load_study(write(tmp_path, body))
    assert fragment in str(e.value)


def test_impossible_variant_is_refused_before_anything_runs(tmp_path):
    p = write(tmp_path, f'[[variant]]\nname = "ok"\narch = "{TINY_A}"\n'
                        '[[variant]]\nname = "bad"\narch = "conv8k3s2p1 | up2 convout"')
    with pytest.raises(CaeError, match="'bad'.*trace: input -> 3x32x32"):
        run_sweep(p, tmp_path / "out", data_dir="/nonexistent")
    assert not (tmp_path / "out" / "ok").exists()  # nothing trained, not even the valid one


def test_shipped_study_is_valid_and_complete():
    s = load_study(Path(__file__).parents[1] / "studies" / "architecture.toml")
    axes = {v.axis for v in s.variants}
    assert len(s.variants) >= 16
    assert {"reference", "depth", "channels", "kernel", "stride", "padding", "upsampling", "latent"} <= axes
    sizes = [v.info.latent_size for v in s.variants]
    assert min(sizes) <= 64 and max(sizes) >= 4096
    assert all(v.cfg.train.epochs == 10 for v in s.variants)


# ----------------------------------------------------------------------------- PCA
def low_rank_images(n: int, rank: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images 3x8x8 lying exactly in a rank-`rank` affine subspace, inside [0, 1] (no clamping)."""
    g = torch.Generator().manual_seed(0)  # the subspace is shared by train and test
    basis = torch.linalg.qr(torch.randn(192, rank, generator=g, dtype=torch.float64))[0]
    coef = torch.randn(n, rank, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = 0.5 + 0.02 * coef @ basis.T
    assert 0 < x.min() and x.max() < 1
    return x.reshape(n, 3, 8, 8).float(), basis


@pytest.mark.parametrize("n_train", [400, 60])  # covariance path (n > D = 192) and Gram path (n < D)
def test_pca_recovers_exact_rank(n_train):
    r = 6
    train, _ = low_rank_images(n_train, r, seed=1)
    test, _ = low_rank_images(100, r, seed=2)
    fit = fit_pca(train)
    res = evaluate_pca(fit, test, [r - 1, r, 3 * r])
    assert res[r]["mse"] < 1e-10 and res[3 * r]["mse"] < 1e-10  # rank-r data: r components are enough
    assert res[r - 1]["mse"] > 1e-6
    assert res[r]["ssim"] > 0.999
    assert torch.allclose(reconstruct(fit, test, r), test, atol=1e-5)


def test_pca_error_is_the_sum_of_discarded_variances():
    """On its own training data, PCA-k's MSE = (sum of the eigenvalues past k) / D (no clamping)."""
    x = 0.5 + 0.03 * torch.randn(500, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    fit = fit_pca(x)
    for k in (5, 50, 150):
        expected = fit.variances[k:].sum().item() / 192
        assert evaluate_pca(fit, x, [k])[k]["mse"] == pytest.approx(expected, rel=1e-3)


# ----------------------------------------------------------------------------- correlation
def test_correlation_known_answers():
    x = [64, 128, 256, 1024, 4096]
    c = correlation(x, [1 / v ** 0.5 for v in x])  # an exact power law: a straight line in log-log
    assert c["pearson_r"] == pytest.approx(-1) and c["spearman_r"] == pytest.approx(-1) and c["n"] == 5
    c = correlation(x, [np.exp(v / 1000) for v in x])  # monotone but not a power law
    assert c["spearman_r"] == pytest.approx(1) and 0 < c["pearson_r"] < 1
    assert correlation([1, 2], [3, 4])["pearson_r"] is None  # too few points for a p-value


# ----------------------------------------------------------------------------- the sweep
class Interrupt:
    """A log that stops training (like Ctrl-C) at the n-th epoch line it sees."""

    def __init__(self, at: int):
        self.at, self.seen, self.lines = at, 0, []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if line.startswith("epoch"):
            self.seen += 1
            if self.seen == self.at:
                raise KeyboardInterrupt


@pytest.mark.slow
def test_sweep_runs_skips_resumes_and_tabulates(tmp_path):
    require(Path(DATA).is_dir(), f"needs the CIFAR-10 binary files at {DATA} (set CAE_DATA_DIR)")
    study = write(tmp_path, f'epochs = 2\n[[variant]]\nname = "a"\narch = "{TINY_A}"\naxis = "reference"\n'
                            f'[[variant]]\nname = "b"\narch = "{TINY_B}"\naxis = "latent"\n')
    out = tmp_path / "sweep"
    kw = dict(limit=300, data_dir=DATA, progress=False)
    # 1) interrupted at b's second epoch line (the trainer logs an epoch before saving it):
    #    a is finished, b has its first epoch saved
    stop = Interrupt(at=4)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(study, out, log=stop, **kw)
    assert (out / "a" / "test_metrics.json").is_file() and not (out / "b" / "test_metrics.json").exists()
    assert (out / "b" / "last.pt").is_file()
    assert any(line.startswith("variant 2/2 b: elapsed") and "estimated remaining" in line for line in stop.lines)
    a_mtimes = {f.name: f.stat().st_mtime_ns for f in (out / "a").iterdir()}
    # 2) the same command again: a skipped untouched, b resumed after its first epoch
    lines: list[str] = []
    rows = run_sweep(study, out, log=lines.append, **kw)
    assert any("a: finished already, skipped" in line for line in lines)
    assert any(line.startswith(f"resuming {out / 'b'} after epoch 1") for line in lines)
    assert {f.name: f.stat().st_mtime_ns for f in (out / "a").iterdir()} == a_mtimes
    assert len((out / "b" / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs
    # 3) the outputs
    with open(out / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert set(COLUMNS) <= set(reader.fieldnames)
    loaded = load_study_results(out)
    assert [r["name"] for r in loaded] == ["a", "b", "pca-512", "pca-1024"]
    for r in loaded[:2]:
        assert r["test_mse"] > 0 and r["ratio_to_pca"] == pytest.approx(r["test_mse"] / r["pca_mse"], rel=1e-4)
        assert r["compression"] == pytest.approx(3072 / r["latent_size"]) and r["epochs"] == 2
    assert loaded[0]["latent_size"] == 1024 and loaded[1]["latent_size"] == 512
    assert rows[0]["test_mse"] == pytest.approx(loaded[0]["test_mse"], rel=1e-4)
    assert json.loads((out / "correlation.json").read_text())["n"] == 2
    for name in ("study.toml", "pca.json", "results.md", "mse_vs_latent.png", "mse_vs_params.png"):
        assert (out / name).is_file(), name
    assert (out / "study.toml").read_text() == study.read_text()
    assert "| a | reference |" in (out / "results.md").read_text()
    # 4) a third run retrains nothing and reuses the cached PCA
    before = {p: p.stat().st_mtime_ns for p in (out / "a" / "test_metrics.json", out / "b" / "best.pt",
                                                 out / "pca.json")}
    run_sweep(study, out, log=lambda s: None, **kw)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # 5) finished runs trained with other settings are not silently reused
    with pytest.raises(CaeError, match="trained with other settings"):
        run_sweep(study, out, epochs=3, log=lambda s: None, **kw)
