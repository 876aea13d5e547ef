"""RunConfig: exact TOML/JSON round trips, refusal of unknown keys, wrong types and bad values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w

from cae.core.config import SHIPPED_CONFIGS, DataConfig, RunConfig, TrainConfig, load_config, save_config
from cae.errors import CaeError


def _custom() -> RunConfig:
    return RunConfig(task="colorize", target="lab", arch="conv8 pool2 | up2 convout",
                     data=DataConfig(dir="/some/where", seed=5, limit=600, normalize="standardize"),
                     train=TrainConfig(epochs=3, batch_size=128, lr=1.2345678901234567e-3, schedule="cosine",
                                       warmup=0.1, weight_decay=1e-5, seed=9, precision="fp32", device="cpu",
                                       eval_batch_size=500),
                     world_size=2)


@pytest.mark.parametrize("suffix", [".toml", ".json"])
@pytest.mark.parametrize("cfg", [RunConfig(), _custom()], ids=["default", "custom"])
def test_round_trip_is_exact(tmp_path: Path, suffix: str, cfg: RunConfig) -> None:
    path = tmp_path / f"c{suffix}"
    save_config(cfg, path)
    back = load_config(path)
    assert back == cfg
    assert back.train.lr == cfg.train.lr  # floats survive bit for bit


def test_unknown_key_refused(tmp_path: Path) -> None:
    d = RunConfig().to_dict()
    d["train"]["epochs_"] = 3
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(d))
    with pytest.raises(CaeError, match=r"unknown key\(s\) epochs_"):
        load_config(path)
    d = RunConfig().to_dict()
    d["colour"] = "red"
    path.write_text(tomli_w.dumps(d))
    with pytest.raises(CaeError, match="colour"):
        load_config(path)


@pytest.mark.parametrize("section,key,value", [
    ("train", "epochs", "10"), ("train", "epochs", True), ("train", "lr", "fast"), ("train", "epochs", 2.5),
    (None, "arch", 3), ("data", "limit", [1]), (None, "train", 5),
])
def test_wrong_type_refused(tmp_path: Path, section: str | None, key: str, value: object) -> None:
    d = RunConfig().to_dict()
    (d[section] if section else d)[key] = value
    path = tmp_path / "c.json"
    path.write_text(json.dumps(d))
    with pytest.raises(CaeError, match=key):
        load_config(path)


def test_int_accepted_for_float(tmp_path: Path) -> None:
    d = RunConfig().to_dict()
    d["train"]["lr"] = 1
    path = tmp_path / "c.json"
    path.write_text(json.dumps(d))
    assert load_config(path).train.lr == 1.0


@pytest.mark.parametrize("change,match", [
    (lambda c: setattr(c, "task", "denoise"), "task"),
    (lambda c: setattr(c, "target", "hsv"), "target"),
    (lambda c: setattr(c, "target", "lab"), "colorize"),  # a chroma target needs --task colorize
    (lambda c: setattr(c.train, "precision", "fp8"), "precision"),
    (lambda c: setattr(c.train, "schedule", "step"), "schedule"),
    (lambda c: setattr(c.data, "normalize", "zca"), "normalize"),
    (lambda c: setattr(c.train, "epochs", 0), "epochs"),
    (lambda c: setattr(c.train, "batch_size", -1), "batch_size"),
    (lambda c: setattr(c.train, "eval_batch_size", 0), "eval_batch_size"),
    (lambda c: setattr(c.train, "lr", 0.0), "lr"),
    (lambda c: setattr(c.train, "lr", float("nan")), "lr"),
    (lambda c: setattr(c.data, "limit", 10), "limit"),
    (lambda c: setattr(c.data, "limit", -1), "limit"),
    (lambda c: setattr(c.data, "seed", -1), "data.seed"),  # numpy's generator refuses it after the lock
    (lambda c: setattr(c.train, "lr", float("inf")), "lr"),
    (lambda c: setattr(c.train, "warmup", 1.0), "warmup"),
    (lambda c: setattr(c.train, "warmup", -0.1), "warmup"),
    (lambda c: setattr(c.train, "weight_decay", -1e-4), "weight_decay"),
    (lambda c: setattr(c.train, "seed", -1), "train.seed"),
    (lambda c: setattr(c.train, "device", "gpu"), "train.device"),
    # settings a run ignored or failed on after its last epoch (AttributeError: no chroma_gain)
    (lambda c: setattr(c.color, "calibrate", True), "calibrate.*task 'reconstruct'"),
    (lambda c: (setattr(c, "task", "colorize"), setattr(c, "target", "ycbcr"), setattr(c.color, "calibrate", True)),
     "calibrate.*arch 'reference'"),
    (lambda c: (setattr(c, "task", "colorize"), setattr(c, "arch", "unet4"), setattr(c.color, "calibrate", True)),
     "calibrate.*target 'rgb'"),
    (lambda c: setattr(c.color, "rebalance", 0.5), "color.rebalance.*classes"),
    (lambda c: setattr(c.color, "decode_rebalance", 0.1), "color.decode_rebalance.*classes"),
    (lambda c: setattr(c.color, "photo_boost", 0.5), "color.photo_boost.*classes"),
    (lambda c: setattr(c.color, "spread", 1.2), "color.spread.*classes"),
    (lambda c: setattr(c.color, "spread", 0.0), r"color.spread must be in \(0, 3\]"),
])
def test_validate_refusals(change, match: str) -> None:  # noqa: ANN001
    cfg = RunConfig()
    change(cfg)
    with pytest.raises(CaeError, match=match):
        cfg.validate()


def test_every_setting_the_checks_allow_builds_a_working_colorizer() -> None:
    """The settings left allowed are those a run uses: a calibrated U-Net classifier of chroma."""
    cfg = RunConfig(task="colorize", target="ycbcr", arch="unet4")
    cfg.color.decoder, cfg.color.rebalance, cfg.color.decode_rebalance = "classes", 0.5, 0.1
    cfg.color.calibrate, cfg.color.photo_boost, cfg.color.spread = True, 0.25, 1.2
    cfg.validate()
    cfg.color.decoder, cfg.color.rebalance, cfg.color.decode_rebalance, cfg.color.photo_boost = "regression", 0, 0, -1
    cfg.color.spread = 1.0
    cfg.validate()  # a regression U-Net calibrates its chroma gain


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(CaeError, match="not found"):
        load_config(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("task = [unclosed")
    with pytest.raises(CaeError, match="not valid TOML"):
        load_config(bad)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(CaeError, match="not valid JSON"):
        load_config(bad)
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CaeError, match="bin.toml"):
        load_config(bad)


def test_shipped_configs_load_by_name_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--config colorize-best` works from an installed package: the name, the file name, and the
    source tree's path configs/NAME.toml all find the shipped file; a file on disk comes first."""
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    shipped = load_config(SHIPPED_CONFIGS / "colorize-best.toml")
    assert shipped.arch == "unet32"
    for name in ("colorize-best", "colorize-best.toml", "configs/colorize-best.toml"):
        assert load_config(name) == shipped, name
    save_config(RunConfig(), tmp_path / "colorize-best.toml")
    assert load_config("colorize-best.toml").arch == "reference"  # an existing file wins over the name
    with pytest.raises(CaeError, match=r"not found.*shipped config \(beats-pca, colorize-best, .*reference"):
        load_config("colorise-best")
    with pytest.raises(CaeError, match="not found"):
        load_config("some/where/colorize-best.toml")  # a path elsewhere is a path, not a name
