"""Shipped = reproducible: each shipped model has its config in cae/configs/, identical to the one
beside its weights, recorded in the precision it names, and reaches its recorded test metrics."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cae.core.runs import WEIGHTS
from cae.core import runs
from cae.core.config import SHIPPED_CONFIGS, load_config
from cae.core.train import eval_run
from conftest import require

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {"reference": "reference.toml", "colorizer": "colorize-best.toml", "guided": "colorize-hints.toml"}  # weights/<name> <- cae/configs/<file>
PRECISION_RECORDED = {"fp32": "float32", "bf16": "bfloat16"}


def test_every_shipped_model_is_listed() -> None:
    assert {p.name for p in WEIGHTS.iterdir() if (p / runs.BEST).is_file()} == set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_config_is_the_one_in_configs(name: str) -> None:
    shipped = load_config(WEIGHTS / name / runs.CONFIG)
    assert shipped == load_config(SHIPPED_CONFIGS / SHIPPED[name])
    # 'auto' would mean bf16 on one CPU and float32 on another: a shipped config names its precision
    assert shipped.train.precision in PRECISION_RECORDED
    recorded = runs.read_json(WEIGHTS / name / runs.TEST_METRICS, ("mse",))
    assert recorded["precision"] == PRECISION_RECORDED[shipped.train.precision]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_weights_reach_their_recorded_test_metrics(name: str) -> None:
    """Evaluated again on the test split their config names, in their recorded precision."""
    data = os.environ.get("CAE_DATA_DIR")
    require(bool(data) and Path(data).is_dir(), "CAE_DATA_DIR is not set to the CIFAR-10 binary folder")
    got = eval_run(WEIGHTS / name, device="cpu")
    recorded = runs.read_json(WEIGHTS / name / runs.TEST_METRICS, ("mse",))
    for key in ("mse", "ssim", "colorfulness"):
        if key in recorded:
            assert got[key] == pytest.approx(recorded[key], rel=1e-4), key


def test_beats_pca_is_the_frontier_studys_winner() -> None:
    """The shipped config beats-pca is the run of the latest frontier study (the README's snapshot)
    that beat PCA by the most at a latent size of 256 or less, with the study's settings, so
    `cae train --config beats-pca` alone trains that run again."""
    from cae.core.config import differences
    from cae.experiments.study import load_study

    result = runs.read_json(ROOT / "docs" / "results" / "frontier" / "frontier.json", ("winner", "models"))
    (variant,) = [v for v in load_study("frontier").variants if v.name == result["winner"]]
    assert differences(load_config(SHIPPED_CONFIGS / "beats-pca.toml"), variant.cfg) == {}
    assert variant.info.latent_size <= 256
    (model,) = [m for m in result["models"] if m["name"] == result["winner"]]
    (row,) = [r for r in result["frontier"] if r["latent_size"] == model["latent_size"]]
    assert model["seeds"] == 3 and model["mse"] + model["mse_std"] < row["pca_mse"]  # the margin holds over seeds


def test_ship_run_copies_a_finished_run_into_the_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """How a shipped model is made: `ship_run` copies exactly the files a shipped folder holds (the
    weights, config, metrics and the normalization and decoding records, not the checkpoints or
    logs) and refuses a run that has not finished."""
    from cae.apps.colorize import ship_run
    from cae.errors import CaeError

    monkeypatch.setattr(runs, "WEIGHTS", tmp_path / "weights")
    run = tmp_path / "run"
    shutil.copytree(WEIGHTS / "colorizer", run)
    (run / runs.LAST).write_bytes(b"a checkpoint")
    (run / runs.METRICS).write_text("epoch\n")
    dest = ship_run(run, "mine")
    assert dest == tmp_path / "weights" / "mine"
    assert sorted(p.name for p in dest.iterdir()) == sorted(n for n in runs.SHIPPED_FILES if (run / n).is_file())
    assert all((dest / n).read_bytes() == (run / n).read_bytes() for n in runs.SHIPPED_FILES if (run / n).is_file())
    (run / runs.TEST_METRICS).unlink()
    with pytest.raises(CaeError, match="not a finished run"):
        ship_run(run, "unfinished")
    assert not (tmp_path / "weights" / "unfinished").exists()
