"""Model cards: generated from each shipped model's files and the recorded results, committed
beside the weights, printed by `cae info --model`, never stale."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cae.core import runs
from cae.core.runs import WEIGHTS
from cae.errors import CaeError
from cae.report.card import CARD, PHOTOS, SHIPPED_MODELS, model_card, write_checkout_cards

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
SECTIONS = ("## What it does", "Intended use:", "## Training data", "## Metrics", "## Known failure modes",
            "## Licence")


def test_every_shipped_model_has_a_card() -> None:
    assert set(SHIPPED_MODELS) == {p.name for p in WEIGHTS.iterdir() if (p / runs.BEST).is_file()}
    for name in SHIPPED_MODELS:
        assert (WEIGHTS / name / CARD).is_file(), f"regenerate: python -m cae.report.card (adds {name}/{CARD})"


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_committed_card_is_what_its_files_generate(name: str) -> None:
    """Regenerating gives the committed text, so a card cannot go stale."""
    assert (WEIGHTS / name / CARD).read_text() == model_card(WEIGHTS / name, RESULTS), (
        "the card is stale: regenerate with `python -m cae.report.card` in the checkout "
        "(or `cae report RUN --readme README.md` after a full run)")


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_card_covers_use_data_metrics_failures_and_licence(name: str) -> None:
    card = model_card(WEIGHTS / name, RESULTS)
    assert [card.index(s) for s in SECTIONS] == sorted(card.index(s) for s in SECTIONS)
    assert "JPEG" in card and "MIT" in card and "CIFAR-10" in card
    config = {"reference": "reference", "colorizer": "colorize-best", "guided": "colorize-hints"}[name]
    assert f"`cae train --config {config} --out runs/{name}`" in card  # the command that reproduces it
    recorded = runs.read_json(WEIGHTS / name / runs.TEST_METRICS)
    assert f"| test MSE (pixels in [0, 1]) | {recorded['mse']:.5f} |" in card
    assert "kodak-dev" in card and "moonshot" not in card.lower()


def _copy_model(name: str, dest: Path) -> Path:
    shutil.copytree(WEIGHTS / name, dest, ignore=shutil.ignore_patterns("best.pt", CARD))
    return dest


def _write_photos(results: Path, rows: list[dict]) -> None:
    base = runs.read_json(RESULTS / PHOTOS)
    base["photos"] = rows
    (results / PHOTOS).parent.mkdir(parents=True, exist_ok=True)
    (results / PHOTOS).write_text(json.dumps(base))


def test_card_follows_the_numbers(tmp_path: Path) -> None:
    """Change a recorded figure and the card changes with it: nothing in it is typed in."""
    model = _copy_model("colorizer", tmp_path / "colorizer")
    results = tmp_path / "results"
    metrics = runs.read_json(model / runs.TEST_METRICS)
    runs.write_json(model / runs.TEST_METRICS, {**metrics, "mse": 0.0123456})
    photo = {"width": 640, "height": 480, "psnr": 20.0, "psnr_gray": 21.0, "colorfulness_truth": 20.0}
    _write_photos(results, [{**photo, "name": "dull.png", "gain_db": -2.5, "colorfulness": 30.0,
                             "colorfulness_ratio": 1.5},
                            {**photo, "name": "fine.png", "gain_db": 1.0, "colorfulness": 10.0,
                             "colorfulness_ratio": 0.5},
                            {**photo, "name": "muted.png", "gain_db": -0.5, "colorfulness": 4.0,
                             "colorfulness_ratio": 0.2}])
    card = model_card(model, results)
    assert "| test MSE (pixels in [0, 1]) | 0.01235 |" in card
    assert "2 of 3 kodak-dev photos come out worse than their gray copy (dull.png -2.50 dB, muted.png -0.50 dB)" in card
    assert "Confident wrong hues: 1 of these" in card and "dull.png 150%" in card and "muted.png 20%" not in card
    assert "640x480" in card

    _write_photos(results, [{**photo, "name": "muted.png", "gain_db": -0.5, "colorfulness": 4.0,
                             "colorfulness_ratio": 0.2}])
    assert "none of the photos that lose to gray was given as much colour" in model_card(model, results)
    (results / PHOTOS).unlink()
    assert "Real photos: not measured" in model_card(model, results)


def test_a_folder_without_a_model_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaeError, match="config.toml not found"):
        model_card(tmp_path, RESULTS)
    with pytest.raises(CaeError, match="not a cae checkout"):
        write_checkout_cards(tmp_path)


def test_cae_info_model_prints_the_card(capsys: pytest.CaptureFixture) -> None:
    from cae.cli import main

    assert main(["info", "--model", "colorizer"]) == 0
    assert capsys.readouterr().out == (WEIGHTS / "colorizer" / CARD).read_text()
    assert main(["info", "--model", "reference", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["card"].startswith("# Model card: reference")
    assert main(["info", "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "colorizer, guided, reference" in err
