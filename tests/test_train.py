"""End to end through the CLI (in process): a short real training writes the whole run folder,
`cae eval` reproduces its test MSE, a finished run is left alone unless --force, `cae info`
reports the reference figures, and user mistakes end in one line with exit code 2.

The training reads the real CIFAR-10 files (600-image subset, 1 epoch); it is skipped with the
reason when they are not there (in CI it fails).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from cae import fast
from cae.core import runs
from cae.cli import main
from cae.core.config import RunConfig, load_config, save_config
from cae.core.data import TEST_FILE, _as_batches_folder, load_cifar10, split_indices
from cae.core.train import gather_split
from conftest import require

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path | None:
    for cand in (os.environ.get("CAE_DATA_DIR"), REPO.parent / "shared" / "datasets"):
        if cand and Path(cand).is_dir():
            found = _as_batches_folder(Path(cand))
            if found is not None and (found / TEST_FILE).is_file():
                return found
    return None


@pytest.fixture(scope="module")
def data_dir() -> Path:
    d = real_data_dir()
    require(d is not None,
            "real CIFAR-10 not found: set CAE_DATA_DIR or place it at ../shared/datasets next to the repo")
    return d


def run_args(data_dir: Path, out: Path, epochs: int = 1) -> list[str]:
    # batch 32: 15 steps on the 480 training images, enough to beat every constant output clearly
    return ["train", "--data", str(data_dir), "--limit", "600", "--epochs", str(epochs), "--batch-size", "32",
            "--device", "cpu", "--out", str(out), "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, one_thread: None) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ref"
    assert main(run_args(data_dir, out)) == 0
    return out


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("cae: error: ")
    return lines[0]


@pytest.mark.slow
def test_run_folder_is_complete(run: Path) -> None:
    for name in ("config.toml", "split.npz", "metrics.csv", "loss.png", "best.pt", "last.pt", "test_metrics.json",
                 "samples.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert not (run / runs.LOCK).exists()
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,val_mse,lr,seconds,unstable" and len(lines) == 2
    result = runs.read_json(run / "test_metrics.json", ("mse", "psnr", "ssim"))
    # figures a constant output (the best one: the test images' mean colour) cannot reach
    constant = constant_output_metrics(run)
    assert result["mse"] < 0.85 * constant["mse"] and result["psnr"] > constant["psnr"] + 0.7, (result, constant)
    assert result["ssim"] > constant["ssim"], (result, constant)  # ~0.21 against ~0.16 after this one epoch
    assert result["loss"] == "mse"
    cfg = load_config(run / "config.toml")
    assert cfg.data.limit == 600 and cfg.train.epochs == 1 and cfg.world_size == 1
    split = runs.load_split(run / "split.npz")
    assert [len(split[k]) for k in ("train", "val", "test")] == [480, 60, 60]
    for png in ("loss.png", "samples.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def constant_output_metrics(run: Path) -> dict[str, float]:
    """The test metrics of the best constant output of a run: every pixel the mean colour of its
    test images (a network that learned nothing but the mean does no better)."""
    from cae.core.metrics import MetricSums
    from cae.core.train import load_run, run_images

    _, cfg, _ = load_run(run)
    rgb = run_images(run, cfg).float() / 255
    sums = MetricSums()
    sums.add(rgb.mean(dim=(0, 2, 3), keepdim=True).expand_as(rgb), rgb)
    return sums.result()


def test_eval_reproduces_test_mse(run: Path, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert main(["eval", str(run), "--json", "--device", "cpu"]) == 0
    got = json.loads(capsys.readouterr().out)
    saved = runs.read_json(run / "test_metrics.json")
    assert got["mse"] == pytest.approx(saved["mse"], rel=1e-6, abs=1e-9)
    assert got["psnr"] == pytest.approx(saved["psnr"], rel=1e-6)


@pytest.mark.slow
def test_eval_runs_the_model_through_the_trainers_fast_path(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In bf16 the fast path and the plain model round differently, so `cae eval` must take the
    path the trainer took (the fast one unless CAE_FAST=0) to give back test_metrics.json."""
    seen = []
    monkeypatch.setattr(fast, "accelerate", lambda model: seen.append(type(model).__name__) or model)
    assert main(["eval", str(run), "--json", "--device", "cpu"]) == 0
    assert seen == ["AutoEncoder"]
    monkeypatch.setenv("CAE_FAST", "0")
    assert main(["eval", str(run), "--json", "--device", "cpu"]) == 0
    assert seen == ["AutoEncoder"]


@pytest.mark.slow
def test_finished_run_is_left_alone_then_force_retrains(run: Path, data_dir: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    args = run_args(data_dir, run)
    stamps = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "--force" in out and "epoch" not in out
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == stamps  # nothing rewritten

    assert main([*args, "--force"]) == 0
    out = capsys.readouterr().out
    assert "epoch   1/1" in out and "test  mse" in out
    assert all((run / n).stat().st_mtime_ns > stamps[n] for n in ("metrics.csv", "best.pt", "test_metrics.json"))
    assert len(runs.read_metrics_csv(run / "metrics.csv")) == 1


@pytest.mark.slow
def test_finished_run_asked_for_other_epochs_is_refused_not_reported(run: Path, data_dir: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """A finished 1-epoch run must not answer a request for 2 epochs with its 1-epoch result."""
    stamps = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    capsys.readouterr()
    assert main(run_args(data_dir, run, epochs=2)) == 2
    line = one_error_line(capsys)
    assert "was started for 1 epochs and 2 were asked for" in line and "--force" in line and "--out" in line
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == stamps  # nothing rewritten
    assert not (run / runs.LOCK).exists()


def test_info_reference(capsys: pytest.CaptureFixture) -> None:
    assert main(["info", "--arch", "reference", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["params"], info["latent_size"], info["macs"]) == (4911, 1024, 1327104)
    assert info["latent_shape"] == [16, 8, 8]


@pytest.mark.parametrize("command", ["info", "train"])
def test_impossible_arch_one_line_with_trace(command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [command, "--arch", "conv8 pool2 conv12 pool3 | up2 convout"]
    if command == "train":
        argv += ["--out", str(tmp_path / "r"), "--data", str(tmp_path / "nowhere")]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "impossible architecture" in line and "pool3 does not divide 16x16" in line
    assert "trace: input -> 3x32x32; conv8" in line


def test_missing_data_dir_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "--data", str(tmp_path / "nowhere"), "--limit", "600", "--out", str(tmp_path / "r")])
    assert code == 2
    line = one_error_line(capsys)
    assert "nowhere" in line and "does not exist" in line
    assert not (tmp_path / "r" / runs.LOCK).exists()


def test_bad_flag_values_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--limit", "5", "--out", str(tmp_path / "r")]) == 2
    assert "data.limit" in one_error_line(capsys)
    assert main(["train", "--device", "tpu", "--out", str(tmp_path / "r"), "--data", str(tmp_path)]) == 2
    assert "tpu" in one_error_line(capsys)
    assert main(["train", "--val-subset", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "train.val_subset" in one_error_line(capsys)


def test_calibrating_a_model_without_a_decoding_is_refused_before_training(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    """It used to train every epoch, then fail with an AttributeError (and again on each resume)."""
    cfg = RunConfig()
    cfg.color.calibrate = True  # a reconstruction autoencoder has no decoding to calibrate
    save_config(cfg, tmp_path / "c.toml")
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r")]) == 2
    assert "color.calibrate = true needs a U-Net colorizer" in one_error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_a_folder_that_is_no_finished_run_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`cae eval` and `cae colorize --model` name what the folder lacks, not a config-file problem."""
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    assert "is not a run folder (it has no config.toml)" in one_error_line(capsys)
    started = tmp_path / "started"  # a run stopped before its first epoch ended: a config, no model
    started.mkdir()
    save_config(RunConfig(task="colorize", target="ycbcr"), started / runs.CONFIG)
    for argv in (["eval", str(started)], ["colorize", "x.png", "--model", str(started), "--out", str(tmp_path / "o")]):
        assert main(argv) == 2
        assert f"has no trained model yet (no best.pt); finish it with cae train --out {started}" in one_error_line(capsys)


def test_network_input_is_the_same_standardization_in_either_memory_layout() -> None:
    from cae.core.tasks import Task

    task = Task("reconstruct", "rgb", mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    rgb = torch.rand(5, 3, 6, 7)
    expected = (rgb.double() - torch.tensor(task.mean, dtype=torch.float64).view(1, 3, 1, 1)) \
        / torch.tensor(task.std, dtype=torch.float64).view(1, 3, 1, 1)
    plain = task.network_input(rgb)
    fast = task.network_input(rgb.contiguous(memory_format=torch.channels_last))
    assert fast.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, fast)  # the same multiply-add per value, only laid out differently
    assert torch.allclose(plain.double(), expected, atol=1e-6)


# ----------------------------------------------------------------------------- augmentation
def test_flip_mask_is_half_seeded_and_new_each_epoch() -> None:
    from cae.core.train import flip_mask

    a = flip_mask(48_000, seed=0, epoch=3)
    assert 0.48 < a.float().mean().item() < 0.52
    assert torch.equal(a, flip_mask(48_000, seed=0, epoch=3))  # a resumed run flips the same images
    assert not torch.equal(a, flip_mask(48_000, seed=0, epoch=4))
    assert not torch.equal(a, flip_mask(48_000, seed=1, epoch=3))


def test_mirror_flips_exactly_the_marked_images() -> None:
    from cae.core.train import mirror

    x = torch.randint(0, 256, (4, 3, 5, 7), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    which = torch.tensor([True, False, False, True])
    y = mirror(x, which)
    for i in range(4):
        assert torch.equal(y[i], x[i].flip(-1) if which[i] else x[i])
    assert torch.equal(y[0, :, :, 0], x[0, :, :, -1])  # left-right, not up-down


def test_translate_moves_each_image_by_its_offset_and_reflects_the_border() -> None:
    import numpy as np

    from cae.core.train import shift_offsets, translate

    x = torch.randint(0, 256, (5, 3, 8, 9), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    offsets = torch.tensor([[0, 0], [2, -3], [-4, 1], [7, 0], [0, -8]])
    y = translate(x, offsets)
    assert y.is_contiguous(memory_format=torch.channels_last) and y.dtype == torch.uint8
    for i, (dy, dx) in enumerate(offsets.tolist()):  # numpy's reflect padding, then the shifted window
        padded = np.pad(x[i].numpy(), ((0, 0), (8, 8), (8, 8)), mode="reflect")
        assert np.array_equal(y[i].numpy(), padded[:, 8 + dy:16 + dy, 8 + dx:17 + dx])
    a = shift_offsets(48_000, 4, seed=0, epoch=3)
    assert a.min() == -4 and a.max() == 4 and abs(a.float().mean()) < 0.05
    assert torch.equal(a, shift_offsets(48_000, 4, seed=0, epoch=3))  # a resumed run shifts the same way
    assert not torch.equal(a, shift_offsets(48_000, 4, seed=0, epoch=4))


def seen_in_training(argv: list[str], out: Path, data_dir: Path) -> tuple[list[torch.Tensor], RunConfig]:
    """Train the CLI's config of `argv` (1 epoch) and return every training batch the network
    was given (its input as uint8 images: `--normalize unit` feeds it the pixels / 255)."""
    from cae.cli import _config_from_args, build_parser
    from cae.core.train import train_run

    cfg = _config_from_args(build_parser().parse_args(
        ["train", "--data", str(data_dir), "--limit", "600", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
         "--precision", "fp32", "--normalize", "unit", "--out", str(out), *argv]))
    seen: list[torch.Tensor] = []

    def watch(model: torch.nn.Module) -> torch.nn.Module:  # `accelerate`'s hook: the plain model, watched
        def hook(module: torch.nn.Module, args: tuple) -> None:
            if module.training:
                seen.append(args[0].detach().mul(255).round().to(torch.uint8))
        model.register_forward_pre_hook(hook)
        return model

    train_run(cfg, out, progress=False, log=lambda line: None, accelerate=watch)
    return seen, cfg


def expected_batches(out: Path, data_dir: Path, moved) -> list[torch.Tensor]:  # noqa: ANN001
    """The epoch's batches as the drawn indices say: training image j, moved by `moved(j, image)`."""
    from cae.core.train import epoch_order

    train = load_cifar10(data_dir).images[runs.load_split(out / runs.SPLIT)["train"]]
    order = epoch_order(len(train), 32, seed=0, epoch=0)
    return [torch.stack([moved(j, train[j]) for j in order[i:i + 32].tolist()]) for i in range(0, len(order), 32)]


def test_flip_mirrors_the_drawn_images_the_network_sees(data_dir: Path, tmp_path: Path, one_thread: None) -> None:
    from cae.core.train import flip_mask

    seen, cfg = seen_in_training(["--flip"], tmp_path / "flip", data_dir)
    assert cfg.train.flip and load_config(tmp_path / "flip" / runs.CONFIG).train.flip
    mask = flip_mask(480, seed=0, epoch=0)
    want = expected_batches(tmp_path / "flip", data_dir, lambda j, img: img.flip(-1) if mask[j] else img)
    assert len(seen) == len(want) == 15
    assert all(torch.equal(a, b) for a, b in zip(seen, want))


def test_shift_moves_the_drawn_images_the_network_sees(data_dir: Path, tmp_path: Path, one_thread: None,
                                                       capsys: pytest.CaptureFixture) -> None:
    import numpy as np

    from cae.core.train import shift_offsets

    assert main(["train", "--shift", "16", "--out", str(tmp_path / "bad")]) == 2
    assert "train.shift" in one_error_line(capsys)
    seen, cfg = seen_in_training(["--shift", "4"], tmp_path / "shift", data_dir)
    assert load_config(tmp_path / "shift" / runs.CONFIG).train.shift == 4
    offsets = shift_offsets(480, 4, seed=0, epoch=0).tolist()

    def moved(j: int, img: torch.Tensor) -> torch.Tensor:  # numpy's reflect padding, then the shifted window
        (dy, dx), padded = offsets[j], np.pad(img.numpy(), ((0, 0), (4, 4), (4, 4)), mode="reflect")
        return torch.from_numpy(padded[:, 4 + dy:36 + dy, 4 + dx:36 + dx].copy())

    want = expected_batches(tmp_path / "shift", data_dir, moved)
    assert len(seen) == len(want) == 15
    assert all(torch.equal(a, b) for a, b in zip(seen, want))


@pytest.mark.slow
def test_calibration_between_grid_steps_end_to_end(data_dir: Path, tmp_path: Path, one_thread: None) -> None:
    """train_run with color.calibrate on a tiny U-Net classifier (the real images, 600 of them):
    given a colorfulness target that lies between two of its boost grid's steps, the run measures
    the crossing and ships it (as the shipped colorizer's boost of 1.34 was chosen)."""
    from cae.core.decoding import BOOST_GRID, DECODING_FILE, between_steps
    from cae.core.train import load_run, train_run

    def calibrated(out: Path, target: float) -> tuple[dict, dict]:
        cfg = RunConfig(task="colorize", target="ycbcr", arch="unet4")
        cfg.data.dir, cfg.data.limit = str(data_dir), 600
        cfg.train.epochs, cfg.train.batch_size, cfg.train.device, cfg.train.precision = 1, 32, "cpu", "fp32"
        cfg.train.clip = 0.0  # as the shipped colorizer trains: one epoch then leaves every boost adding colour
        c = cfg.color
        c.decoder, c.bins, c.decode_rebalance, c.calibrate = "classes", 7, 0.5, True
        c.colorfulness_target, c.mse_tolerance = target, 1.0  # every grid point within the tolerance
        result = train_run(cfg, out, progress=False, log=lambda line: None)
        return result, runs.read_json(out / DECODING_FILE, ("curve", "chosen"))

    _, first = calibrated(tmp_path / "a", 0.6)
    def on_grid(curve: list[dict]) -> list[dict]:  # in the grid's order (a refined curve is sorted by colour)
        return sorted((r for r in curve if r["boost"] in BOOST_GRID), key=lambda r: r["boost"])

    grid = on_grid(first["curve"])
    share = [r["colorfulness"] / r["colorfulness_truth"] for r in grid]
    assert [r["boost"] for r in grid] == list(BOOST_GRID) and share[1] > share[0]
    target = (share[0] + share[1]) / 2  # reachable, and between the grid's first two steps
    result, second = calibrated(tmp_path / "b", target)
    assert on_grid(second["curve"]) == grid  # the same model, trained again
    chosen = second["chosen"]
    assert chosen == between_steps(grid, "boost", target) and BOOST_GRID[0] < chosen < BOOST_GRID[1]
    point = next(r for r in second["curve"] if r["boost"] == chosen)  # measured, and it reaches the target
    assert point["colorfulness"] >= target * point["colorfulness_truth"]
    model, _, _ = load_run(tmp_path / "b")
    assert result["boost"] == chosen and model.boost.item() == pytest.approx(chosen)
    assert runs.read_json(tmp_path / "b" / runs.TEST_METRICS)["boost"] == chosen


def test_val_subset_picks_the_best_epoch_on_it_and_reports_the_whole_split(data_dir: Path, tmp_path: Path,
                                                                           one_thread: None) -> None:
    """`--val-subset N`: each epoch's val_mse is the MSE on the first N validation images; the
    reported val_mse is the best epoch's model on the whole split."""
    from cae.core.train import evaluate, load_run, prepare

    out = tmp_path / "sub"
    assert main(["train", "--data", str(data_dir), "--limit", "600", "--epochs", "2", "--device", "cpu",
                 "--out", str(out), "--quiet", "--val-subset", "20"]) == 0
    model, cfg, task = load_run(out)
    assert cfg.train.val_subset == 20
    p = prepare(cfg, split=runs.load_split(out / runs.SPLIT))
    rows = runs.read_metrics_csv(out / runs.METRICS)
    best = min(rows, key=lambda r: r["val_mse"])
    reported = runs.read_json(out / runs.TEST_METRICS)
    assert reported["best_epoch"] == best["epoch"] and len(p.val) == 60
    model = fast.accelerate(model)  # as the trainer evaluated it, in its precision (bf16 where native)
    assert evaluate(model, p.val[:20], task, amp=p.amp)["mse"] == pytest.approx(best["val_mse"], rel=1e-6)
    assert evaluate(model, p.val, task, amp=p.amp)["mse"] == pytest.approx(reported["val_mse"], rel=1e-6)
    assert reported["val_mse"] != pytest.approx(best["val_mse"], rel=1e-3)


@pytest.mark.slow
def test_the_python_api_example_in_the_docs_runs_as_written(tmp_path: Path, data_dir: Path, one_thread: None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/usage.md's example, run as written on 600 images: its `y` is the reconstruction the
    run's test metrics score (`model(x)` on images in [0, 1] is not: the run standardizes them),
    its `z` the reference's 16x8x8 code."""
    import cae

    block = (REPO / "docs" / "usage.md").read_text().split("## Python API", 1)[1]
    block = block.split("```python", 1)[1].split("```", 1)[0]

    def small(**settings):  # noqa: ANN003, ANN202
        cfg = RunConfig(**settings)
        cfg.data.limit, cfg.data.dir = 600, str(data_dir)
        return cfg

    monkeypatch.setattr(cae, "RunConfig", small)
    monkeypatch.chdir(tmp_path)
    data = load_cifar10(data_dir)
    x = gather_split(data.images, split_indices(data.labels, 0, 600)["test"]).float() / 255
    names = {"x": x}
    Image.new("RGB", (70, 40), (200, 120, 40)).save("photo.jpg")
    exec(block, names)
    recorded = runs.read_json(tmp_path / "runs" / "ref" / "test_metrics.json")["mse"]
    assert names["z"].shape == (len(x), 16, 8, 8)
    assert float(((names["y"] - x) ** 2).mean()) == pytest.approx(recorded, rel=2e-2)
    with Image.open("photo-color.png") as colored:
        assert colored.size == (70, 40) and colored.mode == "RGB"


# ----------------------------------------------------------------------------- golden figures
# Two small fixed-seed runs on the real data (3,000 images, 2 epochs, float32), their figures as
# recorded when these lines last changed. Thread count, CPU kernels (AVX2 or AVX-512) and the
# fast path on or off moved them by at most 3e-5 relative, so a change to the split, the
# initialisation, the schedule, the loop, the decoding or the metrics cannot move them silently.
# A change meant to move them records the new figures here, in the same commit, and says why.
GOLDEN = {
    # the package defaults; recorded again when gradient clipping (train.clip 0.05) became one of them
    "reference": {"train_loss": [0.0419328, 0.0203397], "val_mse": [0.0235940, 0.0186182],
                  "mse": 0.0194351, "ssim": 0.444144},
    "colorize-unet8": {"train_loss": [4.269152, 2.946668], "val_mse": [0.00569276, 0.00551034],
                       "mse": 0.00552582, "ssim": 0.955837, "colorfulness": 1.62173, "boost": 0.75},
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_a_fixed_seed_run_keeps_its_figures(name: str, data_dir: Path, one_thread: None, tmp_path: Path) -> None:
    import cae

    cfg = load_config(name) if name != "reference" else RunConfig(arch="reference")
    cfg.data.limit, cfg.data.dir, cfg.train.epochs, cfg.train.precision = 3000, str(data_dir), 2, "fp32"
    metrics = cae.train_run(cfg, tmp_path / name, log=lambda line: None)
    rows = runs.read_metrics_csv(tmp_path / name / runs.METRICS)
    got = {**metrics, "train_loss": [r["train_loss"] for r in rows], "val_mse": [r["val_mse"] for r in rows]}
    for key, want in GOLDEN[name].items():
        assert got[key] == pytest.approx(want, rel=2e-4), key
    assert metrics["loss"] == ("mse" if name == "reference" else "cross_entropy")  # what train_loss holds
