"""`cae tradeoff`: a colorizer's MSE against its colorfulness over its decoding strength."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from cae.cli import main
from cae.core import runs
from cae.core.data import load_cifar10
from cae.core.decoding import BOOST_GRID, TEMPERATURE_GRID
from cae.core.train import evaluate, load_run, run_images
from cae.errors import CaeError
from cae.experiments.tradeoff import FIELDS, parse_target, run_tradeoff
from helpers import loaded_image, write_smooth_cifar


@pytest.fixture(scope="module")
def data(tmp_path_factory):  # noqa: ANN001, ANN201
    return load_cifar10(write_smooth_cifar(tmp_path_factory.mktemp("cifar"), per_file=200))


def test_curves_of_the_shipped_colorizer(tmp_path, data):
    """Each strength's point is what `evaluate` gives with the model set to it; the run's own
    (calibrated) boost is on the curve and starred; more boost buys colour with MSE."""
    rows = run_tradeoff(["shipped", "shipped:temperature"], tmp_path, data=data, device="cpu", log=lambda _: None)
    boost = [r for r in rows if r["param"] == "boost"]
    temp = [r for r in rows if r["param"] == "temperature"]
    model, cfg, task = load_run(runs.shipped_run("colorizer"), "cpu")
    own = model.boost.item()
    assert [r["value"] for r in boost] == sorted({*BOOST_GRID, round(own, 6)})
    assert [r["value"] for r in temp] == list(TEMPERATURE_GRID)
    assert [r["value"] for r in boost if r["chosen"]] == [pytest.approx(own)]
    assert [r["value"] for r in temp if r["chosen"]] == [1.0]  # never calibrated: the default
    colour = [r["colorfulness_pct"] for r in boost]
    assert colour == sorted(colour) and colour[-1] > 1.5 * colour[0]
    test = run_images(runs.shipped_run("colorizer"), cfg, data, "test")
    for row in (boost[0], next(r for r in boost if r["chosen"])):
        model.boost.fill_(row["value"])
        ref = evaluate(model, test, task, batch_size=100)
        assert row["mse"] == pytest.approx(ref["mse"], rel=1e-5)
        assert row["colorfulness_pct"] == pytest.approx(100 * ref["colorfulness"] / ref["colorfulness_truth"], rel=1e-5)
    # boost 0 and temperature 1 are the same decoding
    assert temp[0]["mse"] == pytest.approx(boost[0]["mse"], rel=1e-9)

    with open(tmp_path / "tradeoff.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == FIELDS and len(table) == len(rows)
    assert {r["run"] for r in table} == {"shipped colorizer"}
    assert loaded_image(tmp_path / "tradeoff.png").size[0] > 400


def test_targets_and_their_errors(tmp_path, data):
    assert parse_target("runs/a:temperature") == ("runs/a", Path("runs/a"), "temperature")
    assert parse_target("runs/a") == ("runs/a", Path("runs/a"), None)
    assert parse_target("T, unet8=runs/a:temperature") == ("T, unet8", Path("runs/a"), "temperature")
    assert parse_target("mine=shipped")[0] == "mine" and parse_target("shipped")[0] == "shipped colorizer"
    for name in ("a:b", "x=y"):  # a folder whose name has a colon or '=' is a folder
        odd = tmp_path / name
        odd.mkdir()
        assert parse_target(str(odd)) == (str(odd), odd, None)
    with pytest.raises(CaeError, match="'foo' is not a decoding strength; give RUN:boost"):
        parse_target("runs/a:foo")
    with pytest.raises(CaeError, match="^shipped colorizer: a classifier colorizer has no chroma_gain; give RUN:boost or RUN:temperature"):
        run_tradeoff(["shipped:chroma_gain"], tmp_path / "o", data=data, device="cpu")
    with pytest.raises(CaeError, match="is not a colorizer with a decoding strength"):
        run_tradeoff([str(runs.shipped_run("reference"))], tmp_path / "o", data=data, device="cpu")
    assert not (tmp_path / "o").exists()  # nothing written for a refused target


def test_a_classifier_without_rebalancing_defaults_to_temperature_and_refuses_boost(tmp_path, data):
    import shutil

    run = tmp_path / "plain"
    shutil.copytree(runs.shipped_run("colorizer"), run)
    config = (run / runs.CONFIG).read_text()
    assert "decode_rebalance = 0.1" in config
    (run / runs.CONFIG).write_text(config.replace("decode_rebalance = 0.1", "decode_rebalance = 0.0"))
    state = torch.load(run / runs.BEST, weights_only=True)
    state["log_weights"].zero_()
    torch.save(state, run / runs.BEST)
    rows = run_tradeoff([str(run)], tmp_path / "o", data=data, device="cpu", log=lambda _: None)
    assert {r["param"] for r in rows} == {"temperature"}
    with pytest.raises(CaeError, match="boost changes nothing .* give RUN:temperature"):
        run_tradeoff([f"{run}:boost"], tmp_path / "o", data=data, device="cpu")


def test_command(tmp_path, data, capsys):
    assert main(["tradeoff", "--out", str(tmp_path), "--data", str(data.source), "--device", "cpu",
                 "--split", "val"]) == 0
    said = capsys.readouterr().out
    boost = runs.read_json(runs.shipped_run("colorizer") / runs.TEST_METRICS, ("boost",))["boost"]
    assert f"shipped colorizer: boost {boost:g} (its own): val mse" in said
    assert (tmp_path / "tradeoff.csv").is_file() and (tmp_path / "tradeoff.png").is_file()
