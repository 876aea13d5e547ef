"""The hint baselines (cae.experiments.guided): inverse distance and Levin et al. 2004, through
the photo path (hints drawn at the working scale, chroma upsampled, luma kept), on tensors, files
(rotated JPEGs) and the API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import cae
from cae.core import runs
from cae.core.color import chroma
from cae.core.data import luma
from cae.core.hints import Hint
from cae.core.photo import Colorizer, hint_maps
from cae.errors import CaeError
from cae.experiments.guided import GuidedBaseline, idw_chroma, levin_chroma, levin_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def two_halves(h: int = 24, w: int = 32) -> torch.Tensor:
    """A gray image (1,1,h,w): dark left half, bright right half."""
    y = torch.full((1, 1, h, w), 0.2)
    y[..., w // 2:] = 0.8
    return y


def maps(hints: list[Hint], h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    return hint_maps(hints, (h, w), (h, w))


RED, BLUE = "#c02020", "#2020c0"


@pytest.mark.parametrize("propagate", [idw_chroma, levin_chroma])
def test_one_hint_colours_the_whole_image_with_its_chroma_and_none_leaves_it_neutral(propagate) -> None:
    y = two_halves()
    cmap, mask = maps([Hint(5, 7, RED)], 24, 32)
    out = propagate(y, cmap, mask)
    assert torch.allclose(out, cmap[:, :, 7:8, 5:6].expand_as(out), atol=1e-4)
    none = maps([], 24, 32)
    assert torch.equal(propagate(y, *none), torch.full((1, 2, 24, 32), 0.5))


@pytest.mark.parametrize("propagate", [idw_chroma, levin_chroma])
def test_hinted_pixels_keep_their_colour(propagate) -> None:
    y = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    cmap, mask = maps([Hint(2, 3, RED), Hint(15, 11, BLUE), Hint(9, 18, "#20c020")], 20, 20)
    out = propagate(y, cmap, mask)
    assert torch.allclose(out[mask.expand_as(out) > 0], cmap[mask.expand_as(cmap) > 0], atol=1e-4)


def test_idw_is_the_inverse_square_distance_mean() -> None:
    cmap, mask = maps([Hint(0, 0, RED), Hint(9, 0, BLUE)], 1, 10)
    out = idw_chroma(torch.zeros(1, 1, 1, 10), cmap, mask)
    a, b = cmap[0, :, 0, 0], cmap[0, :, 0, 9]
    w1, w2 = 1 / 3 ** 2, 1 / 6 ** 2  # pixel 3: 3 from the red hint, 6 from the blue one
    assert torch.allclose(out[0, :, 0, 3], (w1 * a + w2 * b) / (w1 + w2), atol=1e-6)


def test_levin_weights_sum_to_one_and_fall_across_a_luma_edge() -> None:
    y = two_halves(6, 8)[0, 0].double().numpy()
    y[2, 2] += 0.01  # the window of (2, 3) is not flat
    rows, cols, wt = levin_weights(y)
    sums = np.bincount(rows, weights=wt, minlength=48)
    assert np.allclose(sums, 1)
    r = 2 * 8 + 3  # (2, 3): dark, next to the edge between columns 3 and 4
    same, across = wt[(rows == r) & (cols == 2 * 8 + 2)][0], wt[(rows == r) & (cols == 2 * 8 + 4)][0]
    assert same > 100 * across
    assert set(cols[rows == 0]) == {1, 8, 9}  # a corner has 3 neighbours


def test_levin_solves_its_system_each_free_pixel_the_weighted_mean_of_its_neighbours() -> None:
    y = torch.rand(1, 1, 12, 16, generator=torch.Generator().manual_seed(1))
    cmap, mask = maps([Hint(1, 1, RED), Hint(14, 10, BLUE)], 12, 16)
    u = levin_chroma(y, cmap, mask)[0].flatten(1).double().numpy()  # (2, n)
    rows, cols, wt = levin_weights(y[0, 0].double().numpy())
    mean = np.stack([np.bincount(rows, weights=wt * u[c, cols], minlength=u.shape[1]) for c in range(2)])
    free = mask.flatten().numpy() == 0
    assert np.abs(u[:, free] - mean[:, free]).max() < 1e-5


def test_levin_keeps_colours_on_their_side_of_an_edge_where_idw_bleeds() -> None:
    y = two_halves()
    cmap, mask = maps([Hint(2, 12, RED), Hint(29, 12, BLUE)], 24, 32)
    cr_red, cr_blue = cmap[0, 1, 12, 2], cmap[0, 1, 12, 29]
    left = 15  # the last dark column: 13 pixels from the red hint, 14 from the blue one
    lev, idw = levin_chroma(y, cmap, mask)[0, 1], idw_chroma(y, cmap, mask)[0, 1]
    # share of the way from red to blue at the dark side of the edge
    share = lambda cr: ((cr_red - cr[:, left]) / (cr_red - cr_blue)).mean().item()  # noqa: E731
    assert share(lev) < 0.05 and share(idw) > 0.3


def test_a_baseline_keeps_the_size_and_luma_and_without_hints_gives_the_gray_image() -> None:
    rgb = torch.rand(3, 50, 70, generator=torch.Generator().manual_seed(2)) * 0.5 + 0.25
    y = luma(rgb.unsqueeze(0))[0]
    for method in ("idw", "levin"):
        base = GuidedBaseline(method, working_size=20)
        out = base(rgb, [{"x": 10, "y": 40, "color": "#8c6a6a"}])  # mild: in gamut
        assert out.shape == rgb.shape
        assert torch.allclose(luma(out.unsqueeze(0))[0], y, atol=1e-4)  # mid-gray: nothing clipped
        assert torch.allclose(base(rgb), y.expand(3, -1, -1), atol=1e-5)
        assert torch.allclose(base(y), base(rgb, []), atol=1e-6)  # its gray copy in: the same


def test_a_rotated_jpeg_is_coloured_at_the_point_the_hint_names(tmp_path) -> None:
    """A gray photo stored rotated (EXIF orientation 6, as phones write it): a red hint at a point of
    the photo as displayed colours that point red, a blue one far from it blue."""
    w, h = 300, 200  # as displayed
    shown = np.full((h, w), 120, np.uint8)
    shown[:, 150:] = 200  # two regions, so Levin keeps each hint's colour on its side
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    hints = {"version": 1, "hints": [{"x": 60, "y": 150, "color": RED}, {"x": 250, "y": 30, "color": BLUE}]}
    for method in ("idw", "levin"):
        out = np.asarray(GuidedBaseline(method, working_size=64).colorize(path, hints=hints)).astype(int)
        assert out.shape == (h, w, 3)
        r, g, b = out[150, 60]
        assert r > b + 40 and r > g + 40
        r, g, b = out[30, 250]
        assert b > r + 40
        with pytest.raises(CaeError, match=r"hints\[0\]\.y = 250 is outside the photo \(300x200"):
            GuidedBaseline(method).colorize(path, hints=[{"x": 150, "y": 250, "color": RED}])  # the stored size


def test_the_learned_colorizer_refuses_hints_in_one_line_and_takes_none() -> None:
    colorizer = Colorizer.load(device="cpu")
    rgb = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(3))
    with pytest.raises(CaeError, match="trained without hints") as e:
        colorizer(rgb, [{"x": 1, "y": 1, "color": RED}])
    assert "\n" not in str(e.value) and "--method levin" in str(e.value)
    with pytest.raises(CaeError, match=r"hints\[0\]\.color"):  # a bad hint is named before that
        colorizer(rgb, [{"x": 1, "y": 1, "color": "red"}])
    assert torch.equal(colorizer(rgb, []), colorizer(rgb))


def test_an_unknown_method_or_a_system_too_large_is_refused(monkeypatch) -> None:
    with pytest.raises(CaeError, match="unknown hint method 'nearest'; use one of idw, levin"):
        GuidedBaseline("nearest")
    monkeypatch.setattr("cae.experiments.guided.LEVIN_MAX_PIXELS", 100)
    with pytest.raises(CaeError, match="11x10 = 110 is more than 100; give a smaller working size"):
        GuidedBaseline("levin", working_size=0)(torch.rand(3, 10, 11), [{"x": 1, "y": 1, "color": RED}])


# ----------------------------------------------------------------------------- the command and the API
def gray_photo(path, w: int = 120, h: int = 80) -> None:  # noqa: ANN001
    shown = np.full((h, w), 110, np.uint8)
    shown[:, w // 2:] = 190
    Image.fromarray(shown).save(path)


def test_cae_colorize_with_a_hints_file_colours_the_hinted_point(tmp_path) -> None:
    from conftest import run_cae

    gray_photo(tmp_path / "p.png")
    hints = tmp_path / "h.json"
    hints.write_text(json.dumps({"version": 1, "hints": [{"x": 20, "y": 40, "color": RED}]}))
    r = run_cae("colorize", str(tmp_path / "p.png"), "--hints", str(hints), "--method", "levin",
                "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(tmp_path / "out" / "p.png")).astype(int)
    assert out.shape == (80, 120, 3) and out[40, 20, 0] > out[40, 20, 2] + 40
    want = np.asarray(cae.GuidedBaseline("levin").colorize(tmp_path / "p.png", hints=hints)).astype(int)
    assert np.array_equal(out, want)  # the command and the API: the same image


@pytest.mark.parametrize("args, words", [
    (["--hints", "BAD", "--method", "idw"], "h.json: hints[0].color must be a hex colour"),
    (["--method", "levin"], "--method levin spreads the colours of hints: give --hints FILE"),
    (["--hints", "GOOD", "--model", str(runs.shipped_run("colorizer"))], "trained without hints"),
    (["SECOND", "--hints", "GOOD", "--method", "idw"], "a hints file is for one photo, and 2 were given"),
    (["--hints", "OUTSIDE", "--method", "idw"], "p.png: hints[0].x = 500 is outside the photo (120x80"),
])
def test_cae_colorize_refuses_bad_hints_in_one_line(tmp_path, args, words) -> None:
    from conftest import run_cae

    gray_photo(tmp_path / "p.png")
    gray_photo(tmp_path / "q.png")
    files = {"BAD": {"x": 1, "y": 1, "color": "red"}, "GOOD": {"x": 1, "y": 1, "color": RED},
             "OUTSIDE": {"x": 500, "y": 1, "color": RED}}
    for name, hint in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"version": 1, "hints": [hint]}))
    args = [str(tmp_path / f"{a}.json") if a in files else str(tmp_path / "q.png") if a == "SECOND" else a
            for a in args]
    r = run_cae("colorize", str(tmp_path / "p.png"), *args, "--out", str(tmp_path / "out"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == (2 if "OUTSIDE" not in str(args) else 1), r.stderr
    assert len(lines) == 1 and words.replace("h.json", "") in lines[0]
