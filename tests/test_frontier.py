"""The frontier study's analysis: models from runs (seeds grouped), the best per latent size,
and the written answer, which must follow the numbers; the study file itself is traced."""

from __future__ import annotations

import json

import pytest

import os
from pathlib import Path

from cae.experiments.frontier import (JPEG_CAVEAT, answer, best_model, crossover, frontier, group_models,
                                      write_frontier)
from cae.experiments.study import load_study
from cae.experiments.sweep import run_sweep
from conftest import require

DATA = os.environ.get("CAE_DATA_DIR", "/work/shared/datasets/cifar-10-batches-bin")

PCA = {16: {"mse": 0.017, "ssim": 0.37}, 64: {"mse": 0.008, "ssim": 0.62}, 256: {"mse": 0.0022, "ssim": 0.88}}


def run(name: str, k: int, params: int, mse: float, ssim: float = 0.5, axis: str = "w8", arch: str = "") -> dict:
    return {"kind": "conv", "name": name, "axis": axis, "arch": arch or f"arch-{name}", "latent_size": k,
            "params": params, "epochs": 10, "test_mse": mse, "ssim": ssim, "train_seconds": 60.0}


def rows(small16: float = 0.020, big16: float = 0.015) -> list[dict]:
    """Six runs and a PCA row, as write_results makes them (ratio_to_pca included)."""
    runs = [run("k16-w8", 16, 1000, small16, 0.30), run("k16-w32", 16, 16000, big16, 0.40, "w32"),
            run("k64-w8", 64, 1100, 0.012, 0.50), run("k64-w32", 64, 17000, 0.009, 0.60, "w32"),
            run("k256-w8", 256, 1500, 0.006, 0.70), run("k256-w32", 256, 20000, 0.004, 0.80, "w32"),
            {"kind": "pca", "name": "pca-16"}]
    for r in runs[:-1]:
        r["ratio_to_pca"] = r["test_mse"] / PCA[r["latent_size"]]["mse"]
    return runs


def test_seeds_of_one_architecture_are_one_model():
    seeds = [run("k16-w32", 16, 16000, 0.015, arch="same"), run("k16-w32-seed1", 16, 16000, 0.016, arch="same"),
             run("k16-w32-seed2", 16, 16000, 0.017, arch="same")]
    (model,) = group_models(seeds)
    assert model["name"] == "k16-w32" and model["seeds"] == 3
    assert model["mse"] == pytest.approx(0.016) and model["mse_std"] == pytest.approx(0.001)


def test_the_frontier_is_the_best_model_per_size():
    front = frontier(group_models(rows()), PCA)
    assert [r["latent_size"] for r in front] == [16, 64, 256]
    assert [r["best_mse_name"] for r in front] == ["k16-w32", "k64-w32", "k256-w32"]
    assert front[0]["ratio_to_pca"] == pytest.approx(0.015 / 0.017)
    assert front[2]["ssim_ratio_to_pca"] == pytest.approx(0.80 / 0.88)


def test_the_answer_follows_the_numbers():
    text = answer(group_models(rows()), frontier(group_models(rows()), PCA))
    assert "beats PCA in test MSE at latent size 16 of 3 studied" in text and "12% lower" in text
    assert "PCA overtakes it between latent 16 and 64." in text
    assert "grows with the latent size" in text  # 0.88, 1.12, 1.82
    assert "In SSIM a CAE beats PCA at latent size 16 (0.400 against 0.370)" in text
    assert JPEG_CAVEAT in text
    # the same study where the big model at 16 is worse than PCA: no win, and how far it is
    lost = answer(group_models(rows(big16=0.018)), frontier(group_models(rows(big16=0.018)), PCA))
    assert "No CAE beats PCA in test MSE" in lost and "closest is k16-w32 at latent 16" in lost
    assert "PCA is reached after about 2.2 more doublings" in lost  # 1.18 -> 1.06 in 4 doublings: extrapolated
    flat = answer(group_models(rows(small16=0.0181, big16=0.018)), frontier(group_models(rows(big16=0.018)), PCA))
    assert "growing the width does not close the gap at this rate" in flat


def test_the_crossover_lies_between_the_last_win_and_the_first_loss():
    front = frontier(group_models(rows()), PCA)  # wins at 16 only
    assert crossover(front) == pytest.approx((16 * 64) ** 0.5)
    assert crossover(frontier(group_models(rows(big16=0.018)), PCA)) is None  # no win at all


def test_write_frontier_writes_table_json_plots_and_markdown(tmp_path):
    result = write_frontier(rows(), PCA, tmp_path, log=lambda s: None)
    for name in ("frontier.csv", "frontier.json", "frontier_mse.png", "frontier_ssim.png", "results.md"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "frontier.json").read_text())
    assert saved["answer"] == result["answer"] and len(saved["frontier"]) == 3
    assert saved["winner"] == "k16-w32"
    assert "| 16 | 0.01700 | k16-w32 |" in (tmp_path / "results.md").read_text()


def test_the_shipped_frontier_study_is_traced_and_covers_the_sizes():
    study = load_study("frontier")
    assert study.analysis == "frontier"
    sizes = {v.info.latent_size for v in study.variants}
    assert sizes == {16, 32, 64, 128, 256, 512, 1024}
    for k in sizes:  # at least three capacities per size
        assert len({v.info.params for v in study.variants if v.info.latent_size == k}) >= 3, k
    assert all(v.cfg.train.seed == 0 for v in study.variants)  # one seed per point; the winner's come later


def test_the_winner_is_the_largest_win_at_a_small_size():
    runs = rows() + [run("k512-w32", 512, 30000, 0.0001)]
    pca = {**PCA, 512: {"mse": 0.0007, "ssim": 0.96}}
    assert best_model(group_models(runs), pca) == "k16-w32"  # 0.88; k512-w32 wins by more (0.14) but is above 256
    assert best_model(group_models([r for r in runs if r["name"] != "k16-w32"]), pca) is None


@pytest.mark.slow
def test_a_frontier_sweep_trains_the_winner_with_three_seeds(tmp_path, monkeypatch):
    """The sweep's plumbing: the winner's two extra seeds train, and the frontier reports the
    three as one model (which run wins is forced here: on 300 images nothing beats PCA)."""
    require(Path(DATA).is_dir(), f"needs the CIFAR-10 binary files at {DATA} (set CAE_DATA_DIR)")
    import cae.experiments.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "best_model", lambda models, pca: "b")
    path = tmp_path / "frontier.toml"
    path.write_text('analysis = "frontier"\nepochs = 1\n'
                    '[[variant]]\nname = "a"\naxis = "w4"\narch = "conv4 pool2 fc16:none | fc4s16 up2 convout"\n'
                    '[[variant]]\nname = "b"\naxis = "w8"\narch = "conv8 pool2 fc16:none | fc8s16 up2 convout"\n')
    run_sweep(path, tmp_path / "out", limit=300, data_dir=DATA, progress=False, log=lambda s: None)
    out = tmp_path / "out"
    assert (out / "b-seed1" / "test_metrics.json").is_file() and (out / "b-seed2" / "test_metrics.json").is_file()
    seeds = {json.loads((out / f"b-seed{s}" / "test_metrics.json").read_text())["mse"] for s in (1, 2)}
    assert len(seeds) == 2  # other seeds, other results
    result = json.loads((out / "frontier.json").read_text())
    (b,) = [m for m in result["models"] if m["name"] == "b"]
    assert b["seeds"] == 3 and b["mse_std"] > 0


def test_the_answer_names_the_runs_whose_training_blew_up():
    assert "unstable" not in answer(group_models(rows()), frontier(group_models(rows()), PCA))
    blown = rows()
    blown[5]["unstable_epoch"] = 3  # k256-w32
    blown.insert(6, {**run("k256-w32-seed1", 256, 20000, 0.005, 0.8, "w32", arch="arch-k256-w32"),
                     "unstable_epoch": None})
    blown[5]["arch"] = "arch-k256-w32"
    models = group_models(blown)
    (m,) = [m for m in models if m["name"] == "k256-w32"]
    assert m["seeds"] == 2 and m["unstable"] == ["k256-w32"]
    assert "1 of 7 runs became unstable" in answer(models, frontier(models, PCA))
    assert "): k256-w32. Their figures understate" in answer(models, frontier(models, PCA))
