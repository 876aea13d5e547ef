"""The guided colorizer's plumbing (color.hints): the simulated hints it trains on, its input, the
photo path that draws a user's hints at the working scale, and suggested colours."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cae.core import runs
from cae.core.color import chroma
from cae.core.config import RunConfig, save_config
from cae.core.distributed import Dist
from cae.core.model import build_model
from cae.core.photo import Colorizer
from cae.core.tasks import HINT_PATCHES, Task, guide_of, random_guide
from cae.core.train import step_seed
from cae.errors import CaeError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_simulated_hints_reveal_patch_means_of_the_truth_at_their_pixels_and_nothing_else() -> None:
    rgb = torch.rand(400, 3, 32, 32)
    guide = random_guide(rgb, torch.Generator().manual_seed(0), free=0.25, most=64)
    assert guide.shape == (400, 3, 32, 32)
    mask = guide[:, 2:]
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert (guide[:, :2] * (1 - mask)).abs().max() == 0  # no colour where no hint falls
    counts = mask.sum(dim=(1, 2, 3))
    assert counts.max() <= 64
    assert 0.15 < (counts == 0).float().mean() < 0.35  # the hint-free share, 0.25
    assert (counts >= 20).any() and ((counts >= 1) & (counts <= 3)).any()  # log-uniform: few and many
    c = chroma(rgb)
    pooled = torch.stack([c if k == 1 else F.avg_pool2d(c, k, 1, k // 2, count_include_pad=False)
                          for k in HINT_PATCHES])  # (P, N, 2, H, W)
    for i in torch.nonzero(counts)[:, 0][:20]:
        ys, xs = torch.nonzero(mask[i, 0], as_tuple=True)
        given = guide[i, :2, ys, xs] + 0.5  # (2, M)
        errors = (pooled[:, i][:, :, ys, xs] - given).abs().amax(dim=(1, 2))  # per patch width
        assert errors.min() < 1e-5, "each hint is the mean chroma of one patch width around its pixel"


def test_simulated_hints_are_a_function_of_the_seed() -> None:
    rgb = torch.rand(16, 3, 32, 32)

    def draw(seed: int) -> torch.Tensor:
        return random_guide(rgb, torch.Generator().manual_seed(seed), 0.25, 64)

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
    assert step_seed(0, 5) != step_seed(0, 6) != step_seed(1, 5)
    assert step_seed(0, 5, Dist(rank=0, world=2)) != step_seed(0, 5, Dist(rank=1, world=2))


def test_a_guided_task_takes_four_channels_and_no_guide_means_zero_hint_channels() -> None:
    cfg = RunConfig(task="colorize", target="ycbcr", arch="unet4")
    cfg.color.hints = True
    task = Task.from_config(cfg)
    assert task.in_channels == 4
    rgb = torch.rand(2, 3, 8, 8)
    x = task.network_input(rgb)
    assert x.shape == (2, 4, 8, 8) and x[:, 1:].abs().max() == 0
    cmap, mask = torch.full((2, 2, 8, 8), 0.5), torch.zeros(2, 1, 8, 8)
    cmap[0, :, 3, 4], mask[0, 0, 3, 4] = torch.tensor([0.3, 0.9]), 1
    x = task.network_input(rgb, guide_of(cmap, mask))
    assert torch.allclose(x[0, 1:, 3, 4], torch.tensor([-0.2, 0.4, 1.0]))
    assert x[1, 1:].abs().max() == 0


@pytest.mark.parametrize("task, target, arch", [("reconstruct", "rgb", "unet4"), ("colorize", "rgb", "unet4"),
                                                ("colorize", "ycbcr", "reference")])
def test_hints_on_a_run_that_cannot_take_them_are_refused_at_start(task, target, arch) -> None:
    cfg = RunConfig(task=task, target=target, arch=arch)
    cfg.color.hints = True
    with pytest.raises(CaeError, match="color.hints"):
        cfg.validate()


@pytest.fixture(scope="module")
def guided(tmp_path_factory) -> Colorizer:
    """An untrained guided classifier colorizer (unet4, 5x5 bins): enough for the plumbing."""
    d = tmp_path_factory.mktemp("guided") / "run"
    cfg = RunConfig(task="colorize", target="ycbcr", arch="unet4")
    cfg.data.normalize, cfg.color.decoder, cfg.color.bins, cfg.color.hints = "unit", "classes", 5, True
    cfg.color.working_size = 16
    task = Task.from_config(cfg)
    torch.manual_seed(0)
    model = build_model(cfg.arch, task.in_channels, task.out_channels)
    d.mkdir(parents=True)
    save_config(cfg, d / runs.CONFIG)
    runs.save_torch(d / runs.BEST, model.state_dict())
    return Colorizer.load(d, device="cpu")


def test_a_hint_changes_the_result_around_its_point_and_the_luma_is_kept(guided) -> None:
    from cae.core.data import luma

    rgb = torch.rand(3, 48, 64)
    plain = guided(rgb)
    hinted = guided(rgb, [{"x": 10, "y": 40, "color": "#ff0000"}])
    assert guided.guided and plain.shape == hinted.shape == (3, 48, 64)
    assert (plain - hinted).abs().amax(dim=0)[30:48, 0:20].max() > 1e-3
    assert torch.allclose(luma(hinted.unsqueeze(0)), luma(rgb.unsqueeze(0)), atol=2e-3)
    with pytest.raises(CaeError, match=r"hints\[0\].x"):
        guided(rgb, [{"x": 64, "y": 0, "color": "#ff0000"}])


def test_the_guide_is_padded_with_zeros_not_mirrored(guided) -> None:
    """A hint by the border of a photo whose working copy is padded: mirrored padding would draw
    a second hint beyond the border; the result must equal the network run on the unpadded guide."""
    from cae.core.photo import _network_output  # noqa: PLC2701 - the padding under test

    x = torch.rand(1, 3, 13, 21)
    cmap, mask = torch.full((1, 2, 13, 21), 0.5), torch.zeros(1, 1, 13, 21)
    cmap[0, :, 12, 20], mask[0, 0, 12, 20] = torch.tensor([0.2, 0.8]), 1
    guide = guide_of(cmap, mask)
    out = _network_output(guided.model, guided.task, x, 8, 512, 32, guide)
    xp = F.pad(x, (0, 3, 0, 3), mode="reflect")
    with torch.inference_mode():
        ref = guided.model(guided.task.network_input(xp, F.pad(guide, (0, 3, 0, 3))))[:, :, :13, :21]
    assert torch.allclose(out, ref, atol=1e-6)


def test_suggestions_are_the_most_likely_bins_at_the_point_as_colours_of_its_luma(guided) -> None:
    from cae.core.data import luma

    rgb = torch.rand(3, 48, 64)
    got = guided.suggest(rgb, 30, 20, k=4)
    assert len(got) == 4
    probs = [s["probability"] for s in got]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert len({s["color"] for s in got}) == 4
    point = luma(rgb[:, 20, 30].view(1, 3, 1, 1)).item()
    for s in got:
        c = torch.tensor([int(s["color"][i:i + 2], 16) / 255 for i in (1, 3, 5)]).view(1, 3, 1, 1)
        assert luma(c).item() == pytest.approx(point, abs=0.08)  # at the point's luma, unless out of gamut
    after = guided.suggest(rgb, 30, 20, k=4, hints=[{"x": 30, "y": 20, "color": "#00ff00"}])
    assert after != got  # given the hints so far
    with pytest.raises(CaeError, match="outside"):
        guided.suggest(rgb, 64, 20)


def test_a_colorizer_without_hints_refuses_hints_and_suggestions(tmp_path) -> None:
    d = tmp_path / "plain"
    cfg = RunConfig(task="colorize", target="ycbcr", arch="unet4")
    cfg.data.normalize, cfg.color.decoder, cfg.color.bins = "unit", "classes", 5
    model = build_model(cfg.arch, 1, 25)
    d.mkdir()
    save_config(cfg, d / runs.CONFIG)
    runs.save_torch(d / runs.BEST, model.state_dict())
    plain = Colorizer.load(d, device="cpu")
    with pytest.raises(CaeError, match="cannot follow hints"):
        plain(torch.rand(3, 16, 16), [{"x": 1, "y": 1, "color": "#ff0000"}])
    with pytest.raises(CaeError, match="guided"):
        plain.suggest(torch.rand(3, 16, 16), 1, 1)


def test_box_mean_is_the_mean_of_each_window_with_edges_replicated() -> None:
    from cae.core.photo import box_mean

    x = torch.rand(1, 2, 9, 13)
    for r in (1, 3):
        padded = F.pad(x, (r, r, r, r), mode="replicate")
        want = F.avg_pool2d(padded, 2 * r + 1, 1)
        assert torch.allclose(box_mean(x, r), want, atol=1e-5)


def test_edge_aware_upsampling_follows_the_luma_edge_closer_than_bilinear() -> None:
    """A photo whose left part is dark and red, its right part bright and blue; the chroma comes
    at 1/16 of the size. At the luma's edge bilinear upsampling is furthest from the true colour;
    the guided filter, fitting chroma as a function of luma in each window, halves that error."""
    from cae.core.photo import EDGE_SIZE, edge_aware_chroma

    h, w, edge = EDGE_SIZE, 2 * EDGE_SIZE, 203  # an edge between working pixels, not on one
    y = torch.full((1, 1, h, w), 0.3)
    y[..., edge:] = 0.7
    c_full = torch.full((1, 2, h, w), 0.4)
    c_full[:, 1, :, :edge], c_full[:, 0, :, edge:] = 0.7, 0.7
    small = F.interpolate(c_full, scale_factor=1 / 16, mode="area")
    bilinear = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    guided = edge_aware_chroma(y, small)
    assert guided.shape == (1, 2, h, w)

    def worst(c: torch.Tensor) -> float:
        return (c - c_full).abs().max().item()

    assert worst(guided) < 0.6 * worst(bilinear)
    assert torch.equal(edge_aware_chroma(y[..., :16, :16], small[..., :16, :16]), small[..., :16, :16])  # no upsampling


def test_a_colour_upsampler_that_does_not_exist_is_refused() -> None:
    cfg = RunConfig(task="colorize", target="ycbcr", arch="unet4")
    cfg.color.upsample = "bicubic"
    with pytest.raises(CaeError, match="color.upsample"):
        cfg.validate()


def test_the_shipped_guided_colorizer_turns_a_region_towards_the_hinted_colour(tmp_path) -> None:
    """On a real photo: a red hint and a blue hint at the same point shift the mean Cr (red chroma)
    of the region around it apart by a clear margin; the command (with a hints file and no --model:
    the shipped guided colorizer) and the API give the same image."""
    import json
    import os
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from cae.core.photo import photos_in
    from conftest import require, run_cae

    kodak = Path(os.environ.get("CAE_DATA_DIR", "")).parent / "kodak-dev"
    require(kodak.is_dir(), f"kodak-dev is not beside CAE_DATA_DIR ({kodak})")
    photo = photos_in(kodak)[0]
    colorizer = Colorizer.load(guided=True, device="cpu")
    assert colorizer.guided and colorizer.upsample == "guided"
    rgb = colorizer.colorize(photo)
    w, h = rgb.size
    box = (slice(h // 4, h // 4 + 40), slice(w // 2 - 40, w // 2 + 40))

    def mean_cr(hint: str) -> float:
        out = colorizer(torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255,
                        [{"x": w // 2, "y": h // 4 + 20, "color": hint}])
        return chroma(out.unsqueeze(0))[0, 1][box].mean().item()

    assert mean_cr("#d02020") > mean_cr("#2040d0") + 0.08
    hints = tmp_path / "h.json"
    hints.write_text(json.dumps({"version": 1, "hints": [{"x": 30, "y": 40, "color": "#d02020"}]}))
    r = run_cae("colorize", str(photo), "--hints", str(hints), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    got = np.asarray(Image.open(tmp_path / "out" / f"{photo.stem}.png")).astype(int)
    want = np.asarray(colorizer.colorize(photo, hints=hints)).astype(int)
    # the command runs on all threads and this test on one: float sums may round a pixel apart
    assert np.abs(got - want).max() <= 1 and (got != want).mean() < 0.01
