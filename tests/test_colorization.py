"""Baselines on synthetic images, the U-Net, the chroma gain, and the study on tiny synthetic data."""

import csv
from pathlib import Path

import pytest
import torch

from cae.core.spec import trace
from cae.core import runs
from cae.experiments.colorization import (baseline_predictions, compute_baselines, mean_chroma,
                                          run_colorization_study, study_runs)
from cae.core.config import load_config
from cae.core.data import Cifar10, luma
from cae.core.unet import UNet

ROOT = Path(__file__).resolve().parents[1]


def _images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # smooth colour blobs: a random colour per image plus a gradient, as uint8
    base = torch.randint(0, 256, (n, 3, 1, 1), generator=g).float()
    ramp = torch.linspace(-40, 40, 32).view(1, 1, 1, 32)
    return (base + ramp).clamp(0, 255).to(torch.uint8).expand(-1, -1, 32, -1).contiguous()


def test_baseline_a_is_gray_and_b_adds_the_mean_chroma():
    train = torch.zeros(10, 3, 4, 4, dtype=torch.uint8)
    train[:, 0] = 200  # reddish training set
    m = mean_chroma(train)
    assert m[1] > 0.5 > m[0]  # Cr above neutral, Cb below
    rgb = torch.rand(2, 3, 4, 4) * 0.2 + 0.4  # mid-gray: the tinted result stays in gamut (no clipping)
    preds = baseline_predictions(rgb, torch.tensor([0.48, 0.53]))
    assert torch.allclose(preds["a"], luma(rgb).expand(-1, 3, -1, -1))
    assert torch.allclose(luma(preds["b"]), luma(rgb), atol=1e-5)  # the given luma is kept
    assert (preds["b"][:, 0] > preds["b"][:, 2]).all()  # red tint (Cr > 0.5 > Cb)


def test_baselines_on_gray_data_are_perfect_and_b_beats_a_on_tinted_data():
    gray = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8).expand(-1, 3, -1, -1).contiguous()
    b = compute_baselines(gray, gray)
    assert b["a"]["mse"] < 1e-10 and b["b"]["mse"] < 1e-4
    tinted = gray.clone()
    tinted[:, 2] = (tinted[:, 2].int() * 3 // 4).to(torch.uint8)  # every image bluish-poor (yellow cast)
    b = compute_baselines(tinted[:10], tinted[10:])
    assert b["b"]["mse"] < b["a"]["mse"]
    assert b["a"]["colorfulness"] == pytest.approx(0.0, abs=1e-3)


def test_unet_shapes_info_and_skip_docstring():
    m = UNet(1, 2, 4)
    y = m(torch.rand(2, 1, 24, 40))
    assert y.shape == (2, 2, 24, 40) and 0 <= y.min() and y.max() <= 1
    info = trace("unet4", (1, 32, 32), 2)
    assert info.latent_shape == (16, 4, 4) and info.params == sum(p.numel() for p in m.parameters())
    assert info.trace[-1].shape == (2, 32, 32) and info.macs > 0
    import cae.core.unet

    assert "not an autoencoder" in cae.core.unet.__doc__.lower()


def test_chroma_gain_scales_around_gray():
    m = UNet(1, 2, 4).eval()
    x = torch.rand(1, 1, 16, 16)
    base = m(x)
    m.chroma_gain.fill_(2.0)
    assert torch.allclose(m(x), 0.5 + 2 * (base - 0.5), atol=1e-6)


def test_config_files_match_the_study_runs():
    assert load_config("colorize-rgb").to_dict() == study_runs()["rgb"].to_dict()


def test_study_on_tiny_synthetic_data(tmp_path):
    imgs = _images(100)
    data = Cifar10(images=imgs, labels=torch.arange(100) % 10, classes=tuple("abcdefghij"), source=tmp_path)
    logs = []
    res = run_colorization_study(tmp_path / "col", epochs=1, data=data, log=logs.append)
    out = tmp_path / "col"
    for f in ("baselines.json", "results.csv", "results.md", "samples.png", "shortcomings.md"):
        assert (out / f).is_file(), f
    names = [r["name"] for r in res["rows"]]
    assert names[:2] == ["baseline (a) gray", "baseline (b) gray + mean chroma"]
    assert {"rgb", "chroma"} <= set(names) and any(n.startswith("best (boost") for n in names)
    text = (out / "shortcomings.md").read_text()
    assert "Desaturation" in text and "RGB-output reference" in text
    # `best` is the shipped colorizer, evaluated (not trained) on the study's own test images
    best = runs.read_json(out / "best" / runs.TEST_METRICS)
    test_images = len(runs.load_split(out / "chroma" / runs.SPLIT)["test"])
    assert best["shipped"] and best["images"] == test_images and best["arch"] == "unet32"
    assert (out / "best" / runs.BEST).read_bytes() == (runs.shipped_run("colorizer") / runs.BEST).read_bytes()
    assert not (out / "best" / runs.METRICS).exists()  # no training happened
    assert (out / "best" / "samples.png").is_file() and "--config colorize-best" in text
    # its trade-off curve: on the same images, the calibrated point is the one the metrics give
    with open(out / "best" / "tradeoff.csv", newline="") as f:
        curve = list(csv.DictReader(f))
    chosen = [r for r in curve if r["chosen"] == "True"]
    assert len(chosen) == 1 and float(chosen[0]["value"]) == pytest.approx(best["boost"])
    assert float(chosen[0]["mse"]) == pytest.approx(best["mse"], rel=1e-5)
    assert (out / "best" / "tradeoff.png").is_file() and "best/tradeoff.png" in text
    # a second call skips the finished runs and rewrites the same tables
    before = (out / "results.csv").read_text()
    run_colorization_study(out, epochs=1, data=data, log=logs.append)
    assert (out / "results.csv").read_text() == before
    assert any("already finished" in line for line in logs)


def test_shortcomings_sentences_follow_the_numbers():
    """The receptive field is measured on the run's architecture and the explained share of the
    colour variance is computed: change the numbers and the words change."""
    from cae.experiments.colorization import _ambiguity_text, _receptive_field_text

    base = {"chroma_mse": 0.002}
    mostly = _ambiguity_text({"chroma_mse": 0.0016}, base)
    partly = _ambiguity_text({"chroma_mse": 0.0006}, base)
    assert "is 80% of" in mostly and "explains 20%" in mostly and "less than half" in mostly
    assert "is 30% of" in partly and "explains 70%" in partly and "less than half" not in partly
    row = {"mse": 0.0045, "beats_a": "yes", "beats_b": "yes", "arch": "unet8", "params": 100,
           "colorfulness_ratio": 0.5}
    text = _receptive_field_text({**row, "arch": "reference"}, row, None, {"best": {"epochs": 10}})
    assert "26x26 input pixels" in text
    wider = _receptive_field_text({**row, "arch": "conv8k7 pool2 conv12 pool2 conv16 | up2 conv12 up2 convout"},
                                  row, None, {"best": {"epochs": 10}})
    assert "26x26" not in wider


def test_decoded_metrics_equal_evaluate_at_each_decoding():
    """The study scores the shipped colorizer at two decodings from one forward pass; each must
    give what `evaluate` gives with the model set to that decoding."""
    from cae.core.decoding import decoded_metrics
    from cae.core.train import evaluate, load_run

    model, _, task = load_run(runs.shipped_run("colorizer"), "cpu")
    images = _images(40, seed=3)
    chosen = model.boost.item()
    assert chosen > 0  # the calibrated decoding is not the default one, so the two rows differ
    at, default = decoded_metrics(model.eval(), images, task, "boost", (chosen, 0.0), batch=16)
    for row, boost in ((at, chosen), (default, 0.0)):
        model.boost.fill_(boost)
        ref = evaluate(model, images, task, batch_size=40)
        for k in ("mse", "psnr", "ssim", "chroma_mse", "colorfulness", "colorfulness_truth"):
            assert row[k] == pytest.approx(ref[k], rel=1e-5), (boost, k)
    assert at["colorfulness"] > default["colorfulness"]
