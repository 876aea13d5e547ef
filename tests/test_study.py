"""The architecture study: study files, PCA, correlation, and the sweep runner end to end."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_smooth_cifar

from cae.core import runs
from cae.core.config import load_config
from cae.errors import CaeError
from cae.experiments.pca import evaluate_pca, fit_pca, reconstruct
from cae.experiments.study import (COLUMNS, PLOTS, conclusion, correlation, correlation_sentence, load_study,
                                   load_study_results, ratio_words, study_figure, variant_row)
from cae.experiments.sweep import (Eta, parse_shard, run_shard, run_sweep, shard_variants, threads_per_worker,
                                   usable_cpus)
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
    ('[[variant]]\nname = "a"\narch = "reference"\nlr = -1.0', "lr must be a positive number"),
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


def test_no_data_is_one_error_before_any_worker_starts(tmp_path, monkeypatch):
    """Without data and network the sweep tries one download in the parent, not one per worker."""
    import pooch

    tries = []

    def offline(*args, **kwargs):
        tries.append(1)
        raise OSError("offline")

    monkeypatch.delenv("CAE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(pooch, "retrieve", offline)
    p = write(tmp_path, f'[[variant]]\nname = "a"\narch = "{TINY_A}"\n[[variant]]\nname = "b"\narch = "{TINY_A}"')
    with pytest.raises(CaeError, match="could not download CIFAR-10.*offline"):
        run_sweep(p, tmp_path / "out", jobs=2, log=lambda s: None)
    assert tries == [1] and not (tmp_path / "out").exists()


def test_shipped_study_is_valid_and_complete():
    s = load_study(Path(__file__).parents[1] / "src" / "cae" / "studies" / "architecture.toml")
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
    """A log that stops training (like Ctrl-C) at the n-th epoch line it sees (`prefix`: a worker's
    lines start with its variant's name in brackets)."""

    def __init__(self, at: int, prefix: str = ""):
        self.at, self.seen, self.lines, self.prefix = at, 0, [], prefix

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if re.match(self.prefix + "epoch", line):
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


# ----------------------------------------------------------------------------- parallel and sharded sweeps
TINY_C = "conv8 pool2 conv4 | up2 convout"
THREE = (f'[train]\nprecision = "fp32"\n'  # fp32: the runs are then deterministic, so tables compare exactly
         f'[[variant]]\nname = "a"\narch = "{TINY_A}"\naxis = "reference"\n'
         f'[[variant]]\nname = "b"\narch = "{TINY_B}"\naxis = "latent"\n'
         f'[[variant]]\nname = "c"\narch = "{TINY_C}"\naxis = "channels"\n')


@pytest.fixture(scope="module")
def smooth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_smooth_cifar(tmp_path_factory.mktemp("smooth") / "cifar", per_file=400)


@pytest.fixture
def worker_threads():  # noqa: ANN201 - a generator fixture
    """This process on the thread count of a --jobs 2 worker: a different count changes the order
    of float32 sums inside the convolutions (~1e-7 relative), the same count gives the same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads_per_worker(2))
    yield
    torch.set_num_threads(before)


def table(out: Path) -> list[dict]:
    """results.csv without train_seconds (wall time differs from run to run)."""
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in load_study_results(out)]


def assert_same_rows(rows: list[dict], expected: list[dict]) -> None:
    assert [r["name"] for r in rows] == [r["name"] for r in expected]
    for r, e in zip(rows, expected):
        assert set(r) == set(e)
        for k in ("val_mse", "test_mse", "psnr", "ssim", "pca_mse", "ratio_to_pca"):
            if e.get(k) is None:  # the PCA rows have no validation MSE
                assert r.get(k) is None, (r["name"], k)
            else:
                assert r.get(k) == pytest.approx(e.get(k), rel=1e-7), (r["name"], k)


@pytest.mark.parametrize("text", ["0/4", "5/4", "x", "1/0", "", "1/2/3", "-1/4"])
def test_bad_shards_are_refused_in_one_line(text):
    with pytest.raises(CaeError) as e:
        parse_shard(text)
    assert "--shard" in str(e.value) and "\n" not in str(e.value)


def test_shards_split_the_variants_once_each(tmp_path):
    assert parse_shard("2/4") == (2, 4) and parse_shard(" 1 / 1 ") == (1, 1)
    study = load_study(write(tmp_path, "".join(f'[[variant]]\nname = "v{k}"\narch = "{TINY_A}"\n' for k in range(7))))
    shares = [[v.name for v in shard_variants(study.variants, i, 3)] for i in (1, 2, 3)]
    assert shares == [["v0", "v3", "v6"], ["v1", "v4"], ["v2", "v5"]]


def test_cli_refuses_a_bad_shard_with_one_line(tmp_path, capsys):
    from cae.cli import main

    code = main(["sweep", str(write(tmp_path, THREE)), "--out", str(tmp_path / "o"), "--shard", "5/4"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--shard 5/4" in err
    assert not (tmp_path / "o").exists()


def test_a_container_cpu_limit_caps_the_usable_cpus(tmp_path):
    cpus = usable_cpus(tmp_path / "none")  # no cgroup files: the affinity mask alone
    assert cpus >= 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a Kubernetes limit of 1.5 CPUs
    assert usable_cpus(tmp_path) == min(cpus, 2)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == cpus
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(v1) == 1


def test_eta_spreads_the_work_left_over_the_workers():
    study = load_study(Path(__file__).parents[1] / "src" / "cae" / "studies" / "architecture.toml")
    v = study.variants[0]
    eta = Eta(jobs=2, left={"x": v.cost, "y": v.cost, "z": 4 * v.cost})
    assert "unknown" in eta.line()
    eta.recorded(v, 100.0)  # an earlier call's seconds: used until this call has timed a variant
    assert eta.line().endswith(f"remaining {4 * 100}s")  # the longest variant left bounds it from below
    eta.finished(study.variants[0], 10.0)
    eta.left = {"x": v.cost, "y": v.cost, "z": v.cost, "w": v.cost}
    assert eta.line().endswith(f"remaining {2 * 10}s")  # 4 equal variants on 2 workers at 10 s each


@pytest.mark.usefixtures("worker_threads")
def test_shards_and_jobs_give_the_one_process_table(tmp_path, smooth_data):
    study = write(tmp_path, THREE)
    kw = dict(epochs=1, limit=600, data_dir=str(smooth_data), progress=False, log=lambda line: None)
    run_sweep(study, tmp_path / "one", **kw)
    expected = table(tmp_path / "one")
    # two shards one after another, while another live process holds the study folder's lock:
    # shards take only the run folders' own locks, and write no study-level file
    shared = tmp_path / "shared"
    shared.mkdir()
    with runs.RunLock(shared):  # held here, as another process's sweep would hold it
        lines: list[str] = []
        assert run_shard(study, shared, "1/2", **{**kw, "log": lines.append}) == ["a", "c"]
        assert any(line.startswith("shard 1/2 done: trained a, c") for line in lines)
        assert run_shard(study, shared, (2, 2), **kw) == ["b"]
        assert not any((shared / f).exists() for f in ("study.toml", "results.csv", "pca.json"))
        with pytest.raises(CaeError, match="in use by process"):
            run_sweep(study, shared, **kw)  # the merge does take the study lock
    shutil.copy(tmp_path / "one" / "pca.json", shared)  # the same split: the PCA baseline is reused, not refitted
    merge_lines: list[str] = []
    run_sweep(study, shared, **{**kw, "log": merge_lines.append})
    assert sum("finished already, skipped" in line for line in merge_lines) == 3
    assert_same_rows(table(shared), expected)
    # --jobs 2, with b's folder holding another run: b fails by name, a and c still finish
    parallel = tmp_path / "parallel"
    (parallel / "b").mkdir(parents=True)
    shutil.copy(tmp_path / "one" / "a" / "config.toml", parallel / "b")
    (parallel / "b" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CaeError) as e:
        run_sweep(study, parallel, jobs=2, **kw)
    assert str(e.value).startswith("1 of 3 runs failed (2 other(s) finished): b: ") and "\n" not in str(e.value)
    assert runs.is_finished(parallel / "a") and runs.is_finished(parallel / "c") and not multiprocessing.active_children()
    shutil.rmtree(parallel / "b")
    shutil.copy(tmp_path / "one" / "pca.json", parallel)
    # a run that is not a variant, trained by the same workers (as cae reproduce pools its
    # colorization runs): it lands in its own folder, equal to training it alone, outside the results
    alone = tmp_path / "one" / "a"
    extra = tmp_path / "elsewhere" / "x"
    run_sweep(study, parallel, jobs=2, **kw, also=[("x", load_config(alone / runs.CONFIG), extra)])
    assert_same_rows(table(parallel), expected)
    pooled, expected_mse = (runs.read_json(d / runs.TEST_METRICS)["mse"] for d in (extra, alone))
    assert pooled == pytest.approx(expected_mse, rel=1e-7)
    assert (parallel / "results.csv").read_text().count("\n") == (tmp_path / "one" / "results.csv").read_text().count("\n")


@pytest.mark.usefixtures("one_thread")  # the in-process rerun: two threads on busy cores crawl
def test_parallel_sweep_stops_cleanly_on_interrupt_and_resumes(tmp_path, smooth_data):
    study = write(tmp_path, THREE.replace("[train]\n", "epochs = 2\n[train]\n"))
    out = tmp_path / "out"
    kw = dict(limit=600, data_dir=str(smooth_data), progress=False)
    stop = Interrupt(at=1, prefix=r"\[\w+\] ")  # the parent is interrupted at a worker's first epoch line
    with pytest.raises(KeyboardInterrupt):
        run_sweep(study, out, jobs=2, log=stop, **kw)
    assert any(line.startswith("stopping 2 worker process(es)") for line in stop.lines)
    assert not multiprocessing.active_children()  # no worker left behind
    assert not list(out.rglob(runs.LOCK))  # every lock released: the study's and the runs'
    assert not all(runs.is_finished(out / name) for name in "abc")
    # training again finishes every variant (as one shard of one: the results are not the point here)
    assert run_shard(study, out, "1/1", log=lambda line: None, **kw)
    for name in "abc":
        assert len((out / name / runs.METRICS).read_text().splitlines()) == 3  # header + 2 epochs


# ----------------------------------------------------------------------------- the conclusion's words
def study_rows() -> list[dict]:
    def row(name: str, axis: str, latent: int, mse: float, ratio: float) -> dict:
        return {"name": name, "axis": axis, "kind": "conv", "latent_size": latent, "latent_shape": str(latent),
                "params": 1000 + latent, "test_mse": mse, "psnr": 10.0, "ratio_to_pca": ratio}

    return [row("ref", "reference", 1024, 0.010, 1.25), row("deep", "depth", 1024, 0.005, 0.62),
            row("narrow", "channels", 256, 0.012, 0.9), row("tiny", "latent", 64, 0.030, 1.5)]


CORR = {"pearson_r": -0.9, "pearson_p": 0.01, "spearman_r": -0.8, "spearman_p": 0.02, "n": 4,
        "params": {"pearson_r": -0.3, "pearson_p": 0.6, "spearman_r": -0.2, "spearman_p": 0.7, "n": 4}}


def test_conclusion_words_follow_the_numbers(tmp_path):
    text = conclusion(study_rows(), CORR, tmp_path)
    assert "strong negative linear correlation" in text and "larger latent size goes with lower test MSE" in text
    assert "larger parameter count goes with lower test MSE" in text and "weak negative" in text
    assert "capacity: more parameters go with lower error (Spearman ρ -0.20, weak)" in text
    assert "tiny (latent), whose test MSE is about three times the reference's" in text
    assert "is deep (latent 1024, 2,024 parameters) at test MSE 0.00500" in text
    assert "about half the reference's test MSE" in text
    assert "2 of 4 variants are better than PCA at their own latent size (deep, narrow)" in text
    assert "A conv variant beats PCA at a latent size of 256 or less; the best CAE/PCA ratio there is 0.90" in text
    assert "moonshot" not in text.lower()
    # one finding a statement: a Markdown list whose every item is short
    items = re.split(r"^\s*- ", text, flags=re.M)[1:]
    assert len(items) >= 7 and max(len(i.split()) for i in items) <= 80

    flipped = {**CORR, "pearson_r": 0.9, "spearman_r": 0.8}  # the sign of the correlation
    flipped["params"] = {**CORR["params"], "spearman_r": 0.05}
    text = conclusion(study_rows(), flipped, tmp_path)
    assert "strong positive linear correlation" in text and "goes with higher test MSE" in text
    assert "capacity: the parameter count says little about the error (Spearman ρ +0.05, negligible)" in text

    rows = study_rows()  # swap two variants' MSE: the best variant and the reference's ratios change
    rows[0]["test_mse"], rows[1]["test_mse"] = rows[1]["test_mse"], rows[0]["test_mse"]
    text = conclusion(rows, CORR, tmp_path)
    assert "is ref (latent 1024" in text and "deep x2.00" in text and "the reference's test MSE." not in text
    assert "tiny (latent), whose test MSE is 6.0 times the reference's" in text

    rows = study_rows()  # change the ratios to PCA: worse everywhere, then better everywhere
    for r in rows:
        r["ratio_to_pca"] = 2.0
    text = conclusion(rows, CORR, tmp_path)
    assert "no variant is better than PCA" in text and "has a test MSE about twice PCA's" in text
    assert "No conv variant beats PCA at a latent size of 256 or less" in text
    for r in rows:
        r["ratio_to_pca"] = 0.5
    assert "all 4 variants are better than PCA" in conclusion(rows, CORR, tmp_path)

    rows = study_rows()
    rows[1]["test_mse"] = 0.0099  # deep, still the best, now matches the reference
    assert "about the same as the reference's test MSE" in conclusion(rows, CORR, tmp_path)


def test_conclusion_says_whether_the_runs_were_still_learning(tmp_path):
    def metrics(vals: list[float]) -> None:
        for r in study_rows():
            runs.write_metrics_csv(tmp_path / r["name"] / runs.METRICS, [
                {"epoch": e, "train_loss": v, "val_mse": v, "lr": 1e-3, "seconds": 1.0} for e, v in enumerate(vals, 1)])

    metrics([0.03, 0.02, 0.01])
    assert "4 of 4 runs (all) had their best validation MSE at the last epoch" in conclusion(study_rows(), CORR, tmp_path)
    assert "so those were still learning" in conclusion(study_rows(), CORR, tmp_path)
    metrics([0.03, 0.01, 0.02])
    text = conclusion(study_rows(), CORR, tmp_path)
    assert "0 of 4 runs (none)" in text and "none was still improving" in text and "still learning" not in text


@pytest.mark.parametrize("q, words", [(1.02, "about the same as"), (0.5, "about half"), (0.34, "about a third of"),
                                      (2.1, "about twice"), (0.8, "20% lower than"), (1.3, "30% higher than"),
                                      (4.0, "4.0 times")])
def test_ratio_words(q, words):
    assert ratio_words(q) == words


def test_correlation_sentence_follows_the_numbers():
    c = {"pearson_r": -0.82, "pearson_p": 0.001, "spearman_r": 0.3, "spearman_p": 0.4, "n": 12}
    text = correlation_sentence(c, "log latent size", "log test MSE")
    assert "strong negative linear correlation on log scales (Pearson r = -0.820)" in text
    assert "is significant at the 5% level" in text and "opposite sign" in text and "rough" not in text
    text = correlation_sentence({**c, "pearson_r": 0.05, "pearson_p": 0.9, "n": 5})
    assert "negligible positive" in text and "latent size says little about test MSE" in text and "rough" in text
    assert "No correlation" in correlation_sentence({"pearson_r": None, "n": 2})


def test_the_idle_core_gets_its_work_once_every_run_has_started():
    """`when_idle` (the PCA baseline, in a sweep) runs once, on one thread, as soon as the runs
    left are fewer than the workers and all of them started: not before, not twice; its failure
    is logged and the runs still finish."""
    import queue as queue_module
    from types import SimpleNamespace

    import torch

    from cae.core.config import RunConfig
    from cae.experiments.sweep import Eta, Job, _collect

    events = [("start", "a", 1), ("start", "b", 2), ("done", "a", 5.0), ("start", "c", 1),
              ("done", "b", 6.0), ("log", "c", "epoch 1/1"), ("done", "c", 4.0)]
    seen: list[tuple[int, int]] = []  # (events consumed when called, threads)

    class Events:
        def get(self, timeout: float):
            if not events:
                raise queue_module.Empty
            return events.pop(0)

    def idle() -> None:
        seen.append((7 - len(events), torch.get_num_threads()))
        raise RuntimeError("disk full")

    alive = [SimpleNamespace(pid=pid, exitcode=None, is_alive=lambda: True) for pid in (1, 2)]
    waiting = {n: Job(n, f"variant {n}", RunConfig(), Path(n), 1) for n in "abc"}
    lines: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as a sweep's parent on two cores
    try:
        errors = _collect(alive, Events(), waiting, lines.append, Eta(jobs=2), when_idle=idle)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert errors == {} and not waiting
    assert seen == [(5, 1)]  # after b's "done": c, the last run, had started and a worker was free
    assert any("idle core failed" in line and "disk full" in line for line in lines)


def test_a_worker_that_died_fails_its_run_with_its_exit_code():
    """A worker killed without reporting (out of memory, SIGKILL) fails the run it had taken, in
    one log line naming the run, and the runs nobody took fail once no worker is left."""
    from types import SimpleNamespace

    from cae.core.config import RunConfig
    from cae.experiments.sweep import Job, _account_dead_workers

    dead = SimpleNamespace(pid=11, exitcode=-9, is_alive=lambda: False)
    waiting = {name: Job(name, f"variant {i}/2 {name}", RunConfig(), Path(name), 1) for i, name in enumerate("ab", 1)}
    errors: dict[str, str] = {}
    lines: list[str] = []
    _account_dead_workers([dead], {11: "a"}, waiting, errors, lines.append)
    assert errors["a"] == "its worker process died (exit code -9)"
    assert lines == ["variant 1/2 a: failed: its worker process died (exit code -9)"]
    assert errors["b"].startswith("not trained: every worker process had exited (exit codes -9)") and not waiting


def test_a_run_whose_training_blew_up_is_noted_in_its_results_row(tmp_path):
    v = next(v for v in load_study("architecture").variants if v.note)
    pca = {min(v.info.latent_size, 3072): {"mse": 0.01}}
    runs.write_json(tmp_path / runs.TEST_METRICS, {"mse": 0.012, "psnr": 19.0, "ssim": 0.6, "val_mse": 0.011,
                                                   "best_epoch": 2})

    def row_after(train: list[float]) -> dict:
        runs.write_metrics_csv(tmp_path / runs.METRICS, [
            {"epoch": e, "train_loss": t, "val_mse": t, "lr": 1e-2, "seconds": 1.0} for e, t in enumerate(train, 1)])
        return variant_row(v, tmp_path, pca)

    stable = row_after([0.03, 0.02, 0.019, 0.018])  # falling epoch after epoch
    assert stable["unstable_epoch"] is None and "unstable" not in stable["note"]
    row = row_after([0.02, 0.01, 0.03, 0.06])  # the rule of cae.core.stability, which the trainer applies too
    assert row["unstable_epoch"] == 4
    assert row["note"].endswith("unstable at epoch 3: the training loss rose to 0.03000, 3.00x its lowest before "
                                "(0.01000), and stayed up in epoch 4; tested at epoch 2")
    assert row["note"].startswith(v.note + "; ")  # the study file's own note is kept


# ----------------------------------------------------------------------------- the plots' labels
RECORDED = Path(__file__).resolve().parents[1] / "docs" / "results" / "study"


def crowded_rows() -> list[dict]:
    """Fifteen variants at one latent size with nearly equal errors, and a few elsewhere: the worst
    case for names written beside their points."""
    rows = [{"name": f"variant-{i:02d}-{'x' * (i % 4)}", "axis": f"axis{i % 5}", "kind": "conv", "latent_size": 1024,
             "params": 5000 + 10 * i, "test_mse": 0.0030 * (1 + 0.002 * i)} for i in range(15)]
    rows += [{"name": f"latent-{k}", "axis": "latent", "kind": "conv", "latent_size": k, "params": 4000 + k,
              "test_mse": 0.2 / k} for k in (64, 256, 4096)]
    return rows


def overlapping_labels(fig) -> list[tuple[str, str]]:  # noqa: ANN001 - a matplotlib Figure
    """The pairs of texts (point names, and the legend) whose bounding boxes overlap when drawn
    (`Text.get_window_extent`: the text's own box; an annotation's would include its leader line)."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [(t.get_text(), Text.get_window_extent(t, renderer)) for t in ax.texts]
    boxes.append(("the legend", ax.get_legend().get_window_extent(renderer)))
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)]


@pytest.mark.parametrize("source", ["recorded", "crowded"])
@pytest.mark.parametrize("x_key, xlabel", [(k, label) for k, _, label in PLOTS])
def test_no_two_point_names_overlap_in_the_study_plots(source, x_key, xlabel):
    import matplotlib.pyplot as plt

    if source == "recorded":  # the full study's 19 variants, 14 of them at latent 1,024
        rows = load_study_results(RECORDED)
    else:
        rows = crowded_rows()
    pca = {r["latent_size"]: {"mse": r["test_mse"]} for r in rows if r["kind"] == "pca"}
    fig = study_figure(rows, pca, x_key, xlabel)
    names = sorted(t.get_text() for t in fig.axes[0].texts)
    assert names == sorted(r["name"] for r in rows if r["kind"] == "conv")  # every point is named, once
    assert overlapping_labels(fig) == []
    plt.close(fig)
