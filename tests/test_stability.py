"""A run that becomes unstable says so, in its epoch line and in its files; a healthy one does not.

The rule (cae.core.stability) reads only the per-epoch rows, so it is checked on rows first,
including the figures of a real collapse, then end to end on short real trainings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cae.cli import main
from cae.core import runs
from cae.core.stability import NEAR_MEAN_IMAGE, TRAIN_RISE, VAL_RISE, find_instability, mean_image_mse
from test_train import data_dir  # noqa: F401 - the real-data fixture


def rows(*pairs: tuple[float, float]) -> list[dict]:
    return [{"epoch": e, "train_loss": t, "val_mse": v} for e, (t, v) in enumerate(pairs, 1)]


def test_a_falling_run_is_stable() -> None:
    assert find_instability(rows((0.013, 0.008), (0.007, 0.0055), (0.0058, 0.0053), (0.0039, 0.0039))) is None
    assert find_instability([]) is None and find_instability(rows((0.3, 0.3))) is None


def test_the_reported_collapse_is_found_when_it_stays_up() -> None:
    """The default run that collapsed on an AVX2-only CPU (seed 0, no clipping): its training error
    rose 1.45x in epoch 2 (under the old 2x rule), its validation error 2.85x, and stayed up."""
    collapsed = rows((0.01339, 0.01030), (0.01944, 0.02939), (0.01990, 0.01520), (0.01421, 0.01341))
    jump = find_instability(collapsed)
    assert (jump.since, jump.epoch, jump.what, jump.reference, jump.value) == (2, 3, "training loss", 0.01339, 0.01944)
    assert jump.text().startswith("epoch 2: the training loss rose to 0.01944, 1.45x") and "stayed up in epoch 3" in jump.text()
    # while training, epoch 2 alone is a jump the run may still recover from
    assert find_instability(collapsed[:2], finished=False) is None


def test_a_spike_the_next_epoch_recovers_from_is_not_instability() -> None:
    """The linear reconstruct-best run: its validation error jumped 45x in epoch 4 and was back
    under its lowest in epoch 5."""
    spiked = rows((0.028, 0.00236), (0.00065, 0.000092), (0.00035, 0.000079), (0.00056, 0.00358), (0.00014, 0.000071))
    assert find_instability(spiked) is None
    assert find_instability(spiked[:4]).since == 4  # the same jump in a finished run's last epoch


@pytest.mark.parametrize("column, rise, what", [(0, TRAIN_RISE, "training loss"), (1, VAL_RISE, "validation error")])
def test_a_jump_is_measured_against_the_lowest_before_it(column: int, rise: float, what: str) -> None:
    def run(factor: float) -> list[dict]:
        jumped = [0.0045, 0.0045]
        jumped[column] = 0.004 * factor  # against the lowest (epoch 2), not the previous epoch
        return rows((0.01, 0.01), (0.004, 0.004), (0.0045, 0.0045), tuple(jumped), tuple(jumped))

    assert find_instability(run(rise * 0.99)) is None
    jump = find_instability(run(rise * 1.01))
    assert (jump.since, jump.epoch, jump.what, jump.reference) == (4, 5, what, 0.004)


def test_an_output_near_the_mean_image_is_a_collapse_from_the_second_epoch() -> None:
    mean = 0.06
    near = NEAR_MEAN_IMAGE * mean * 1.01
    assert find_instability(rows((0.07, near)), mean) is None  # the first epoch may still be learning
    jump = find_instability(rows((0.07, near), (0.069, near * 0.999)), mean)
    assert (jump.epoch, jump.what) == (2, "collapse") and "constant image" in jump.text()
    assert find_instability(rows((0.07, near), (0.069, near * 0.999))) is None  # without a mean image: no rule


def test_mean_image_mse_is_the_error_of_the_training_mean() -> None:
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (50, 3, 4, 4), generator=g, dtype=torch.uint8)
    val = torch.randint(0, 256, (7, 3, 4, 4), generator=g, dtype=torch.uint8)
    mean = train.numpy().astype(np.float64).mean(0) / 255
    expected = ((val.numpy() / 255 - mean) ** 2).mean()
    assert mean_image_mse(train, val, chunk=16) == pytest.approx(expected, rel=1e-12)


def train(out: Path, data: Path, *flags: str) -> tuple[int, str]:
    return main(["train", "--data", str(data), "--limit", "3000", "--epochs", "3", "--device", "cpu",
                 "--precision", "fp32", "--out", str(out), "--quiet", *flags])


@pytest.mark.slow
def test_a_forced_unstable_run_warns_and_its_files_say_so(tmp_path: Path, data_dir: Path,  # noqa: F811
                                                          one_thread: None, capsys: pytest.CaptureFixture) -> None:
    assert train(tmp_path / "hot", data_dir, "--lr", "1.0") == 0
    out = capsys.readouterr().out
    assert "warning: training became unstable at epoch 2" in out and out.count("warning:") == 1
    assert "(--lr) usually avoids it" in out  # clipping is on already: the learning rate is what to lower
    assert "UNSTABLE" in [line for line in out.splitlines() if line.startswith("epoch   2/3")][0]
    metrics = runs.read_json(tmp_path / "hot" / runs.TEST_METRICS, ("mse",))
    assert metrics["unstable_epoch"] == 2 and metrics["unstable"].startswith("epoch 2:")
    assert [r["unstable"] for r in runs.read_metrics_csv(tmp_path / "hot" / runs.METRICS)] == [0, 1, 1]


@pytest.mark.slow
def test_a_healthy_run_is_silent(tmp_path: Path, data_dir: Path, one_thread: None,  # noqa: F811
                                 capsys: pytest.CaptureFixture) -> None:
    assert train(tmp_path / "ok", data_dir) == 0
    out = capsys.readouterr().out
    assert "warning" not in out and "UNSTABLE" not in out
    metrics = json.loads((tmp_path / "ok" / runs.TEST_METRICS).read_text())
    assert metrics["unstable_epoch"] is None and metrics["unstable"] is None
    assert metrics["mse"] < 0.5 * mean_image_mse_of(tmp_path / "ok")
    assert [r["unstable"] for r in runs.read_metrics_csv(tmp_path / "ok" / runs.METRICS)] == [0, 0, 0]


def mean_image_mse_of(run: Path) -> float:
    from cae.core.config import load_config
    from cae.core.train import run_images

    cfg = load_config(run / runs.CONFIG)
    return mean_image_mse(run_images(run, cfg, part="train"), run_images(run, cfg, part="test"))


@pytest.mark.parametrize("clip", [0.0, 1e-4])
def test_clip_caps_the_gradient_adam_sees(clip: float) -> None:
    """train.clip scales a step's gradient down to that global norm before Adam takes it (Adam's first
    moment after one step is (1 - beta1) times the gradient it was given)."""
    from cae.core.config import RunConfig
    from cae.core.tasks import Task
    from cae.core.train import Prepared, make_model, make_optimizer, train_step

    cfg = RunConfig(arch="reference")
    cfg.train.clip = clip
    task = Task.from_config(cfg)
    images = torch.randint(0, 256, (16, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    p = Prepared(cfg, torch.device("cpu"), None, task, {}, images, images, images, ())
    model = make_model(cfg, task, p.device)
    opt = make_optimizer(cfg, model)
    train_step(p, model, opt, images, lr=1e-3)
    given = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(opt.state[q]["exp_avg"])
                                                  for q in model.parameters()])) / 0.1
    grad = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(q.grad) for q in model.parameters()]))
    if clip:
        assert given.item() == pytest.approx(clip, rel=1e-2)  # clip_grad_norm_ keeps a 1e-6 margin
    else:  # off: the whole gradient, well above the clip tried
        assert given.item() == pytest.approx(grad.item(), rel=1e-4) and grad.item() > 10 * 1e-4
