"""Working-scale colorization, the chroma classifier and its decoding, calibration in train_run,
scoring on a folder of photos, and the group-norm U-Net."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cae.core import runs
from cae.cli import main
from cae.core.color import BIN_RANGE, chroma_bins, soft_bins
from cae.core.photo import predict, total_stride
from cae.experiments.photos import evaluate_photos
from cae.core.config import ColorConfig, RunConfig, load_config, save_config
from cae.core.data import Cifar10, luma
from cae.errors import CaeError
from cae.core.tasks import Task
from cae.core.unet import UNet, annealed_mean


def _run(d: Path, color: ColorConfig | None = None) -> Path:
    """A colorize run folder with an untrained unet4 (enough to exercise the plumbing)."""
    from cae.core.model import build_model

    cfg = RunConfig(task="colorize", target="ycbcr", arch="unet4", color=color or ColorConfig())
    cfg.data.normalize = "unit"
    task = Task.from_config(cfg)
    torch.manual_seed(0)
    d.mkdir(parents=True)
    save_config(cfg, d / runs.CONFIG)
    runs.save_torch(d / runs.BEST, build_model("unet4", task.in_channels, task.out_channels).state_dict())
    return d


def test_working_scale_keeps_size_and_luma_and_runs_small(tmp_path):
    from cae.core.train import load_run

    model, cfg, task = load_run(_run(tmp_path / "r"), "cpu")
    model.chroma_gain.fill_(0.2)  # an untrained net's colours, muted: nothing leaves the gamut, nothing is clipped
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    rgb = 0.3 + 0.4 * torch.rand(3, 50, 75)  # mid tones
    out = predict(model, task, rgb, total_stride(cfg.arch), working_size=16)
    assert out.shape == rgb.shape
    assert (luma(out[None]) - luma(rgb[None])).abs().max().item() < 1e-5
    assert seen == [(16, 24)]  # 16x24 (short side 16, padded to the stride 8), not 50x75
    predict(model, task, rgb, total_stride(cfg.arch), working_size=0)
    assert seen[-1] == (56, 80)  # native: padded to the stride


def test_color_settings_round_trip_and_are_checked(tmp_path):
    cfg = RunConfig(task="colorize", target="ycbcr", arch="unet8",
                    color=ColorConfig(decoder="classes", bins=9, rebalance=0.5, calibrate=True,
                                      colorfulness_target=0.7, mse_tolerance=0.03, working_size=48))
    save_config(cfg, tmp_path / "c.toml")
    assert load_config(tmp_path / "c.toml") == cfg
    assert Task.from_config(cfg).out_channels == 81
    for bad in (dict(decoder="nope"), dict(bins=2), dict(rebalance=1.0), dict(working_size=-1), dict(photo_boost=-0.5)):
        with pytest.raises(CaeError):
            RunConfig(task="colorize", target="ycbcr", arch="unet8", color=ColorConfig(**bad)).validate()
    with pytest.raises(CaeError, match="U-Net"):
        RunConfig(task="colorize", target="ycbcr", arch="reference", color=ColorConfig(decoder="classes")).validate()


def test_soft_bins_are_unbiased_and_annealing_moves_to_the_mode():
    k = 7
    c = torch.rand(2, 2, 3, 3) * (BIN_RANGE[1] - BIN_RANGE[0]) + BIN_RANGE[0]
    idx, w = soft_bins(c, k)
    centres = chroma_bins(k)
    back = (centres[idx] * w.unsqueeze(-1)).sum(dim=1).permute(0, 3, 1, 2)  # the 4 centres' weighted mean
    assert torch.allclose(back, c, atol=1e-5) and torch.allclose(w.sum(1), torch.ones(2, 3, 3))
    logits = torch.zeros(1, k * k, 1, 1)
    logits[0, 3, 0, 0], logits[0, 40, 0, 0] = 2.0, 1.0
    sharp = annealed_mean(logits, centres, 0.01)[0, :, 0, 0]
    assert torch.allclose(sharp, centres[3], atol=1e-4)  # T -> 0: the mode
    mean = annealed_mean(logits, centres, 1.0)[0, :, 0, 0]
    assert torch.allclose(mean, (torch.softmax(logits[0, :, 0, 0], 0)[:, None] * centres).sum(0), atol=1e-5)


def test_group_norm_unet_is_independent_of_the_batch_and_classifier_decodes():
    m = UNet(1, 2, 8).train()
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    x = torch.rand(4, 1, 16, 16)
    # train mode too: no batch statistics, so a shard of the batch gives the same outputs (DDP = one process)
    assert torch.allclose(m(x)[:2], m(x[:2]), atol=1e-6)
    c = UNet(1, 25, 8)
    assert c.train()(x).shape == (4, 25, 8, 8)  # logits at half resolution
    y = c.eval()(x)
    assert y.shape == (4, 2, 16, 16) and y.min() >= BIN_RANGE[0] - 1e-6 and y.max() <= BIN_RANGE[1] + 1e-6


def test_spread_widens_each_image_around_its_own_mean_colour(tmp_path):
    """color.spread scales each image's chroma deviations from that image's mean (not the batch's),
    keeps the mean, reaches the calibration's curve, and comes from the run's config on load;
    photos decode without it."""
    from cae import Colorizer
    from cae.core.decoding import decoding_curve
    from cae.core.train import load_run

    torch.manual_seed(0)
    m = UNet(1, 25, 8).eval()
    torch.nn.init.normal_(m.head[1].weight)  # opinions, so the chroma varies within an image
    logits = m.raw(torch.rand(3, 1, 16, 16))
    plain = m.decode(logits)
    m.spread.fill_(1.5)
    wide = m.decode(logits)
    mean = plain.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(wide.mean(dim=(2, 3), keepdim=True), mean, atol=1e-6)
    assert torch.allclose(wide - mean, 1.5 * (plain - mean), atol=1e-6)
    assert torch.allclose(m.decode(logits[1:2]), wide[1:2], atol=1e-6)  # one image alone: the same

    run = _run(tmp_path / "r", ColorConfig(decoder="classes", decode_rebalance=0.1, spread=1.5, photo_boost=0.0))
    model, cfg, task = load_run(run)
    assert model.spread.item() == 1.5 and "spread" not in runs.load_torch(run / runs.BEST)
    assert Colorizer.load(run, "cpu").model.spread.item() == 1.0
    images = _tiny_data(8).images
    wide_curve = decoding_curve(model, images, task, "boost", (0.0,))
    model.spread.fill_(1.0)
    assert wide_curve[0]["colorfulness"] > decoding_curve(model, images, task, "boost", (0.0,))[0]["colorfulness"]


def _tiny_data(n: int = 100) -> Cifar10:
    g = torch.Generator().manual_seed(0)
    imgs = (torch.rand(n, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    return Cifar10(images=imgs, labels=torch.arange(n) % 10, classes=tuple("abcdefghij"), source=Path("."))


@pytest.mark.parametrize("decoder,param", [("classes", "temperature"), ("regression", "chroma_gain")])
def test_train_run_calibrates_the_decoding(tmp_path, one_thread, decoder, param):
    from cae.core.decoding import DECODING_FILE
    from cae.core.train import load_run, train_run

    cfg = RunConfig(task="colorize", target="ycbcr", arch="unet4",
                    color=ColorConfig(decoder=decoder, bins=5, rebalance=0.5 if decoder == "classes" else 0.0,
                                      calibrate=True, colorfulness_target=2.0))
    cfg.train.epochs, cfg.train.batch_size = 1, 16
    res = train_run(cfg, tmp_path / "r", progress=False, data=_tiny_data(), log=lambda s: None)
    curve = runs.read_json(tmp_path / "r" / DECODING_FILE, ("curve",))
    # an unreachable target: the most colourful decoding within the tolerance is chosen
    assert res[param] == curve["chosen"] and "default_mse" in res
    assert curve["chosen"] in [r[param] for r in curve["curve"]]  # a measured point
    model, _, _ = load_run(tmp_path / "r")
    assert getattr(model, param).item() == pytest.approx(curve["chosen"])
    assert load_config(tmp_path / "r" / runs.CONFIG) == cfg  # the chosen value is not a config change
    # stopped after the calibration saved best.pt, before the test: the resumed run calibrates
    # again from the default decoding and reports what the uninterrupted run did
    (tmp_path / "r" / runs.TEST_METRICS).unlink()
    again = train_run(cfg, tmp_path / "r", progress=False, data=_tiny_data(), log=lambda s: None)
    assert {k: again[k] for k in res if k != "train_seconds"} == {k: v for k, v in res.items() if k != "train_seconds"}


def _curve(param: str, points: list[tuple[float, float, float]]) -> list[dict]:
    return [{param: v, "colorfulness": c, "colorfulness_truth": 30.0, "mse": m} for v, c, m in points]


def test_calibration_refines_between_grid_steps():
    """The grid's first point reaching the target overshoots it; the crossing is interpolated
    between it and the step before, rounded towards the colourful side, in either direction."""
    from cae.core.decoding import between_steps, choose_decoding

    boost = _curve("boost", [(1.0, 20.7, 0.0044), (1.25, 22.05, 0.0045), (1.5, 23.4, 0.0047)])
    assert choose_decoding(boost, "boost", 0.12, 0.75) == 1.5  # 75% of 30 = 22.5
    assert between_steps(boost, "boost", 0.75) == 1.34  # 1.3333 rounded up
    # the step after the crossing is beyond the MSE tolerance: the grid misses the target, the
    # interpolated point may not (the calibration measures it against the tolerance)
    assert choose_decoding(boost, "boost", 0.05, 0.75) == 1.25 and between_steps(boost, "boost", 0.75) == 1.34
    temps = _curve("temperature", [(1.0, 20.0, 0.004), (0.9, 21.0, 0.004), (0.8, 23.0, 0.004)])
    assert between_steps(temps, "temperature", 0.75) == 0.82  # 0.825 rounded down: more colour
    assert between_steps(boost, "boost", 0.6) is None  # reached at the first grid point: nothing before it
    assert between_steps(boost, "boost", 0.9) is None  # not reached at all
    exact = _curve("boost", [(1.0, 20.0, 0.004), (1.25, 22.5, 0.004)])
    assert between_steps(exact, "boost", 0.75) is None  # the grid's point is the crossing


def test_photos_evaluation_on_two_synthetic_images(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in (("a.png", (40, 64)), ("b.jpg", (48, 36))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(photos / name)
    run = _run(tmp_path / "r", ColorConfig(working_size=16))
    res = evaluate_photos(photos, tmp_path / "out", model_dir=run, log=lambda s: None)
    rows = res["photos"]
    assert [r["name"] for r in rows] == ["a.png", "b.jpg"] and res["working_size"] == 16
    assert all(r["gain_db"] == pytest.approx(r["psnr"] - r["psnr_gray"]) for r in rows)
    assert res["summary"]["worst_gain_db"] == min(r["gain_db"] for r in rows)
    for f in ("photos.csv", "photos.json", "photos.png"):
        assert (tmp_path / "out" / f).is_file()
    assert main(["colorize", "--photos", str(photos), "--out", str(tmp_path / "cli"), "--model", str(run),
                 "--working-size", "0"]) == 0
    assert runs.read_json(tmp_path / "cli" / "photos.json", ("summary",))["working_size"] == 0
    # its photos.png would overwrite (or join) the photos: refused before any work
    with pytest.raises(CaeError, match="is the photo folder itself"):
        evaluate_photos(photos, photos, model_dir=run, log=lambda s: None)
    assert sorted(f.name for f in photos.iterdir()) == ["a.png", "b.jpg"]


def test_photos_are_decoded_at_the_photo_boost(tmp_path):
    """A classifier's calibrated boost is for CIFAR-10; photos use color.photo_boost (-1: the
    calibrated one) or --boost, and a higher boost gives more colourful photos."""
    from cae import Colorizer
    from cae.core.color import rebalance_weights

    photos = tmp_path / "photos"
    photos.mkdir()
    yy, xx = np.mgrid[0:64, 0:96]
    Image.fromarray(np.stack([xx * 2, yy * 3, 255 - xx * 2], -1).astype(np.uint8)).save(photos / "ramp.png")
    run = _run(tmp_path / "r", ColorConfig(decoder="classes", decode_rebalance=0.1, photo_boost=0.0, working_size=32))
    state = runs.load_torch(run / runs.BEST)
    torch.manual_seed(1)
    state["head.1.weight"].normal_()  # a net with opinions, so the decoding matters
    state["log_weights"] = rebalance_weights(torch.softmax(torch.randn(13 * 13), 0), 0.1).log()
    state["boost"] = torch.tensor(1.5)  # as calibrated on CIFAR-10
    runs.save_torch(run / runs.BEST, state)
    assert Colorizer.load(run, "cpu").model.boost.item() == 0.0  # the run's photo boost
    assert Colorizer.load(run, "cpu", boost=2.0).model.boost.item() == 2.0
    with pytest.raises(CaeError, match="boost must be >= 0"):
        Colorizer.load(run, "cpu", boost=-1.0)
    cfg = load_config(run / runs.CONFIG)
    cfg.color.photo_boost = -1
    save_config(cfg, run / runs.CONFIG)
    assert Colorizer.load(run, "cpu").model.boost.item() == 1.5  # -1: the calibrated boost
    col = {}
    for b in ("0", "3"):
        assert main(["colorize", "--photos", str(photos), "--out", str(tmp_path / b), "--model", str(run),
                     "--boost", b]) == 0
        res = runs.read_json(tmp_path / b / "photos.json", ("summary",))
        assert res["boost"] == float(b)
        col[b] = res["summary"]["colorfulness_ratio"]
    assert col["3"] > col["0"]


def _photos_of_every_kind() -> list[Image.Image]:
    """An RGB photo taller than two merge strips (STRIP 32), its RGBA, 16-bit gray, 32-bit integer gray of
    8-bit values, and a palette image with a transparent colour."""
    rng = np.random.default_rng(3)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 8, 3), dtype=np.uint8)).resize((45, 70)))
    rgb = Image.fromarray(smooth)
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    gray16 = Image.fromarray((smooth[..., 1].astype(np.uint16) * 257)).convert("I;16")
    gray32 = Image.fromarray(smooth[..., 0].astype(np.int32), "I")
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    return [rgb, rgba, gray16, gray32, palette]


@pytest.mark.parametrize("target", ["ycbcr", "lab"])
def test_colorize_8bit_equals_colorize_bit_for_bit(tmp_path, monkeypatch, one_thread, target):
    """The strip-wise path `cae serve` uses for big photos gives the very pixels of `colorize`,
    for every kind of image, at the working scale and at native size."""
    from cae.core import photo
    from cae.core.photo import Colorizer, load_for_photos

    monkeypatch.setattr(photo, "STRIP", 32)  # strips of 32 rows: the 70-row images take three
    if target == "ycbcr":
        colorizer = Colorizer.load(device="cpu")  # the shipped colorizer
    else:
        run = _run(tmp_path / "r")
        cfg = load_config(run / runs.CONFIG)
        cfg.target = "lab"
        save_config(cfg, run / runs.CONFIG)
        colorizer = Colorizer(*load_for_photos(run, "cpu"))
    for working_size in (colorizer.working_size, 0):
        colorizer.working_size = working_size
        for img in _photos_of_every_kind():
            lean, plain = colorizer.colorize_8bit(img), colorizer.colorize(img)
            assert lean.mode == plain.mode and lean.size == plain.size, img.mode
            assert np.array_equal(np.asarray(lean), np.asarray(plain)), (img.mode, working_size)
