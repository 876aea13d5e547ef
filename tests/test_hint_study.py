"""The hint study (cae.experiments.hint_study): the random hints of its protocol, and a tiny run
on photos and CIFAR-like images written to CSV and JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cae.core.photo import hint_maps
from cae.errors import CaeError
from cae.experiments.hint_study import draw_hints, random_hints, run_hint_study
from helpers import example_module, hint_summary

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_random_hint_is_the_mean_colour_of_the_7x7_patch_around_its_point() -> None:
    rgb = torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(0))
    hints = random_hints(rgb, 30, torch.Generator().manual_seed(1))
    assert len({(h.x, h.y) for h in hints}) > 20
    for h in hints:
        x, y = int(h.x), int(h.y)
        assert 0 <= x < 50 and 0 <= y < 40
        patch = rgb[:, max(0, y - 3):y + 4, max(0, x - 3):x + 4]
        assert torch.allclose(torch.tensor(h.rgb), patch.mean(dim=(1, 2)), atol=0.5 / 255 + 1e-6)
    corner = random_hints(torch.ones(3, 5, 5) * torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1), 3,
                          torch.Generator().manual_seed(2))
    assert all(h.color == "#ff0000" for h in corner)  # cut at the border, not padded with black


def test_draws_are_fixed_by_the_seed_distinct_between_images_and_draws() -> None:
    rgb = torch.rand(3, 30, 30, generator=torch.Generator().manual_seed(0))
    assert draw_hints(rgb, 3, 1) == draw_hints(rgb, 3, 1)
    assert draw_hints(rgb, 3, 1) != draw_hints(rgb, 3, 0) != draw_hints(rgb, 4, 0)
    assert draw_hints(rgb, 3, 1, seed=5) != draw_hints(rgb, 3, 1)


def test_a_study_of_fewer_counts_scores_the_hints_the_full_study_gives_at_those_counts(tmp_path) -> None:
    rgb = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(0))
    assert draw_hints(rgb, 2, 1, most=10) == draw_hints(rgb, 2, 1)[:10]
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(halves(48, 32, (200, 40, 40), (40, 60, 200))).save(photos / "a.png")
    rows = {}
    for counts in ((5,), (0, 5, 50)):
        result = run_hint_study(tmp_path / str(len(counts)), photos=photos, counts=counts, draws=2,
                                log=lambda _: None, photo_names=["idw"])
        rows[counts] = {(s["method"], s["hints"]): s for s in result["summary"]["photos"]}
    assert rows[(5,)]["idw", 5] == rows[(0, 5, 50)]["idw", 5]


def halves(w: int, h: int, left: tuple, right: tuple) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2], a[:, w // 2:] = left, right
    return a


def test_a_tiny_study_writes_its_rows_and_summary_and_hints_beat_gray(tmp_path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(halves(48, 32, (200, 40, 40), (40, 60, 200))).save(photos / "a.png")
    Image.fromarray(halves(40, 40, (30, 160, 60), (220, 200, 60))).save(photos / "b.png")
    cifar = torch.from_numpy(np.stack([halves(32, 32, (200, 40, 40), (40, 200, 40)).transpose(2, 0, 1)] * 3))
    result = run_hint_study(tmp_path / "out", photos=photos, cifar=cifar, counts=(0, 1, 10), draws=2,
                            log=lambda _: None)
    rows = (tmp_path / "out" / "hint_study.csv").read_text().splitlines()
    assert (tmp_path / "out" / "hint_study.png").is_file()
    assert len(rows) == 1 + (2 + 3) * 2 * 3 * 2  # header; images x draws x counts x methods
    saved = json.loads((tmp_path / "out" / "hint_study.json").read_text())
    assert saved == json.loads(json.dumps(result))
    for name in ("photos", "cifar10-test"):
        table = {(s["method"], s["hints"]): s for s in result["summary"][name]}
        for method in ("idw", "levin"):
            assert abs(table[method, 0]["mean_gain_db"]) < 1e-6  # no hints: the gray image
            assert table[method, 0]["colorfulness_ratio"] < 1e-3
            assert table[method, 10]["mean_gain_db"] > max(1, table[method, 1]["mean_gain_db"])  # two colours, two halves
        assert table["levin", 10]["mean_gain_db"] > table["idw", 10]["mean_gain_db"]  # levin keeps the edge
    assert "gain_of_mean_mse_db" in result["summary"]["cifar10-test"][0]


def test_the_study_refuses_to_run_on_nothing_or_an_unknown_method(tmp_path) -> None:
    with pytest.raises(CaeError, match="needs a photo folder"):
        run_hint_study(tmp_path)
    with pytest.raises(CaeError, match="unknown hint method 'nearest'"):
        run_hint_study(tmp_path, cifar=torch.zeros(1, 3, 32, 32, dtype=torch.uint8), names=["nearest"])


def test_hints_of_the_study_land_inside_any_image() -> None:
    rgb = torch.rand(3, 7, 300)
    hints = draw_hints(rgb, 0, 0)
    _, mask = hint_maps(hints, (7, 300), (7, 300))
    assert 0 < mask.sum() <= 50


def test_the_command_reads_its_hint_counts_or_refuses_them_in_one_line() -> None:
    from cae.cli import parse_counts

    assert parse_counts("0,5, 10") == [0, 5, 10]
    for bad in ("", "a,1", "5,-1"):
        with pytest.raises(CaeError, match="--counts is a comma-separated list"):
            parse_counts(bad)


def test_the_guided_colorizer_is_scored_at_every_count_and_hints_raise_its_psnr(tmp_path) -> None:
    from cae.core.runs import shipped_run

    cifar = torch.from_numpy(np.stack([halves(32, 32, (200, 40, 40), (40, 60, 200)).transpose(2, 0, 1)] * 2))
    result = run_hint_study(tmp_path / "out", cifar=cifar, names=[], counts=(0, 2, 20), draws=1,
                            guided_dir=shipped_run("guided"), log=lambda _: None)
    table = {(s["method"], s["hints"]): s for s in result["summary"]["cifar10-test"]}
    assert sorted(table) == [("guided", 0), ("guided", 2), ("guided", 20)]
    assert table["guided", 20]["psnr"] > table["guided", 0]["psnr"] + 3  # the hints' colours are followed
    with pytest.raises(CaeError, match="trained without hints"):
        run_hint_study(tmp_path / "x", cifar=cifar, names=[], guided_dir=shipped_run("colorizer"))


def test_the_plot_has_a_panel_per_set_and_a_line_per_method(tmp_path) -> None:
    from cae.experiments.hint_study import plot_hint_study

    photos = {"levin": {0: 0.0, 1: 0.4, 50: 3.1}, "idw": {0: 0.0, 1: 0.3, 50: 2.2}, "automatic": {0: -0.6},
              "guided": {0: -0.5, 1: 0.9, 50: 2.7}}
    cifar = {"levin": {0: 0.0, 5: 1.5}, "guided": {0: 0.2, 5: 2.5}}
    fig = plot_hint_study({"cifar10-test": hint_summary(cifar, cifar=True), "photos": hint_summary(photos)},
                          tmp_path / "hint_study.png")  # as hint_study.json keeps them (sorted keys)
    assert (tmp_path / "hint_study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    panels = fig.get_axes()
    assert [ax.get_title() for ax in panels] == ["photos", "CIFAR-10 test images"]
    for ax, gains in zip(panels, (photos, cifar)):
        lines = lines_of(ax)
        assert sorted(lines) == sorted(gains)
        legend = [t.get_text() for t in ax.get_legend().get_texts()]  # a fixed order: the same colour per method
        assert legend == (["idw", "levin", "automatic", "guided"] if gains is photos else ["levin", "guided"])
        for method, by_count in gains.items():
            xs, ys = lines[method].get_data()
            if len(by_count) > 1:  # CIFAR-10: the gain of the mean MSE, not the mean of the gains
                assert list(xs) == list(by_count) and list(ys) == pytest.approx(list(by_count.values()))
        assert ax.get_xscale() == "symlog"  # 0 hints is on the axis
    for method in cifar:  # a method keeps its colour from panel to panel
        assert lines_of(panels[0])[method].get_color() == lines_of(panels[1])[method].get_color()
    xs, ys = lines_of(panels[0])["automatic"].get_data()
    assert list(xs) == [0, 50] and list(ys) == [-0.6, -0.6]  # scored at 0 hints: a level across the counts


def lines_of(ax) -> dict:  # noqa: ANN001 - a matplotlib Axes
    return {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}


def test_a_smaller_study_scores_the_first_photos_with_the_baselines_asked_for(tmp_path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(halves(24, 16, (200, 40, 40), (40, 60, 200))).save(photos / "a.png")
    Image.fromarray(halves(20, 20, (30, 160, 60), (220, 200, 60))).save(photos / "b.png")
    cifar = torch.from_numpy(np.stack([halves(32, 32, (200, 40, 40), (40, 200, 40)).transpose(2, 0, 1)] * 2))
    result = run_hint_study(tmp_path / "out", photos=photos, cifar=cifar, counts=(0, 5), draws=1, log=lambda _: None,
                            photo_limit=1, photo_names=["idw"])
    assert result["photo_images"] == 1 and result["cifar_images"] == 2
    assert {s["method"] for s in result["summary"]["photos"]} == {"idw"}
    assert {s["method"] for s in result["summary"]["cifar10-test"]} == {"idw", "levin"}
    names = {r.split(",")[1] for r in (tmp_path / "out" / "hint_study.csv").read_text().splitlines()[1:]
             if r.startswith("photos,")}
    assert names == {"a.png"}


def test_the_hint_reach_table_groups_pixels_by_distance_and_its_oracle_picks_the_closest_hint(
        tmp_path, monkeypatch, capsys) -> None:
    """examples/hint_reach.py: distances are to the nearest hint; the oracle takes, at each pixel,
    the hint colour nearest the truth, so on a photo of two flat colours hinted in both it is exact."""
    reach = example_module("hint_reach")
    from cae.core.hints import Hint

    dist, colours = reach.nearest_hint([Hint(0, 0, "#ff0000"), Hint(9, 3, "#0000ff")], 4, 10)
    assert dist[0, 0] == 0 and dist[3, 9] == 0 and dist[0, 9] == pytest.approx(3.0)
    assert dist[3, 0] == pytest.approx(3.0) and dist[1, 5] == pytest.approx(min(26, 20) ** 0.5)
    two_colours = torch.zeros(3, 64, 96)
    two_colours[0, :, :48], two_colours[2, :, 48:] = 0.8, 0.8  # red | blue
    from cae.core.color import chroma

    truth = chroma(two_colours.unsqueeze(0))[0]
    _, colours = reach.nearest_hint([Hint(10, 10, "#cc0000"), Hint(80, 50, "#0000cc")], 64, 96)
    assert torch.allclose(reach.oracle(truth, colours), truth, atol=2e-3)
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray((two_colours.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / "halves.png")
    monkeypatch.setattr("sys.argv", ["hint_reach.py", "--photos", str(folder), "--hints", "20"])
    reach.main()
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "%" in line]
    assert len(rows) == len(reach.BANDS) and rows[-1][0] == "| all"
    assert sum(float(r[1].rstrip("%")) for r in rows[:-1]) == pytest.approx(100, abs=0.5)
    assert float(rows[-1][-1].rstrip(" |")) < 1e-4  # with 20 hints, both colours are among them
