"""The hints format (cae.core.hints) and hints drawn at a working scale (cae.core.photo.hint_maps):
every malformed entry is refused in one line naming it, and a hint lands where it was put, at any
size and camera rotation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from cae.core.color import chroma
from cae.core.hints import Hint, check_inside, hints_document, hints_of, load_hints, parse_hints
from cae.core.photo import downscale, hint_maps, open_file, rgb_of, working_shape
from cae.errors import CaeError


def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def doc(*hints: dict, **top) -> dict:  # noqa: ANN003
    return {"version": 1, "hints": list(hints), **top}


RED = {"x": 3, "y": 4, "color": "#B02020"}


# ----------------------------------------------------------------------------- the format
def test_a_valid_file_gives_typed_hints_with_the_global_radius_where_none_is_own(tmp_path) -> None:
    path = tmp_path / "h.json"
    path.write_text(json.dumps(doc(RED, {"x": 0.5, "y": 7, "color": "#00ff00", "radius": 3}, radius=2)))
    hints = load_hints(path)
    assert hints == [Hint(3.0, 4.0, "#b02020", 2.0), Hint(0.5, 7.0, "#00ff00", 3.0)]
    assert hints[0].rgb == pytest.approx((0xb0 / 255, 0x20 / 255, 0x20 / 255))
    assert parse_hints(hints_document(hints)) == hints  # written and read back


@pytest.mark.parametrize("bad, words", [
    ([], "a JSON object"),
    (doc(RED, version=2), "version must be 1"),
    ({"hints": []}, "version must be 1"),
    ({"version": True, "hints": []}, "version must be 1"),
    (doc(hint=1), "'hint' is not a key"),
    ({"version": 1, "hints": {"x": 1}}, "hints must be a list"),
    (doc(radius=-1), "radius must be >= 0"),
    (doc(RED, 5), "hints[1] must be an object"),
    (doc(RED, {"x": 1, "y": 2}), "hints[1].color is missing"),
    (doc(RED, RED, {"y": 2, "color": "#000000"}), "hints[2].x is missing"),
    (doc({**RED, "color": "red"}), 'hints[0].color must be a hex colour "#rrggbb", got "red"'),
    (doc({**RED, "color": "#12345"}), "hints[0].color must be a hex colour"),
    (doc({**RED, "color": 0xb02020}), "hints[0].color must be a hex colour"),
    (doc({**RED, "x": "3"}), "hints[0].x must be a number of pixels"),
    (doc({**RED, "y": True}), "hints[0].y must be a number"),
    (doc({**RED, "y": -1}), "hints[0].y must be >= 0"),
    (doc({**RED, "radius": -2}), "hints[0].radius must be >= 0"),
    (doc({**RED, "colour": "#000000"}), "hints[0].colour is not a field of a hint"),
    (doc({**RED, "a\nb": 1}), 'hints[0]["a\\nb"] is not a field of a hint'),
])
def test_a_malformed_document_is_refused_in_one_line_naming_the_entry_and_field(bad, words) -> None:
    with pytest.raises(CaeError) as e:
        parse_hints(bad)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_file_that_is_not_json_names_the_file_and_the_place(tmp_path) -> None:
    path = tmp_path / "h.json"
    path.write_text('{"version": 1, "hints": [}')
    with pytest.raises(CaeError, match=r"h\.json: not JSON \(.* at line 1 column 26\)"):
        load_hints(path)
    with pytest.raises(CaeError, match="no such hints file"):
        load_hints(tmp_path / "missing.json")
    path.write_text(json.dumps(doc({**RED, "color": "blue"})))
    with pytest.raises(CaeError, match=r"h\.json: hints\[0\]\.color"):
        load_hints(path)


def test_a_point_outside_the_photo_is_refused_naming_the_entry() -> None:
    hints = parse_hints(doc(RED, {"x": 99, "y": 50, "color": "#000000"}))
    check_inside(hints, 100, 51)  # the last pixel is (99, 50)
    with pytest.raises(CaeError, match=r"hints\[1\]\.y = 50 is outside the photo \(100x50"):
        check_inside(hints, 100, 50)
    with pytest.raises(CaeError, match=r"hints\[1\]\.x = 99 is outside"):
        hint_maps(hints, (60, 99), (30, 50))  # the drawing checks too


def test_the_api_takes_a_list_of_dicts_or_hints_a_document_or_a_file(tmp_path) -> None:
    path = tmp_path / "h.json"
    path.write_text(json.dumps(doc(RED)))
    want = [Hint(3.0, 4.0, "#b02020")]
    assert hints_of([RED]) == hints_of(want) == hints_of(doc(RED)) == hints_of(str(path)) == want
    assert hints_of(None) == []
    with pytest.raises(CaeError, match=r"hints\[0\]\.color"):
        hints_of([{**RED, "color": "#zzzzzz"}])
    with pytest.raises(CaeError, match="got int"):
        hints_of(3)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=12)
FIELD = st.sampled_from(["x", "y", "color", "radius", "colour"])
ENTRY = st.dictionaries(FIELD, JSON | st.sampled_from(["#a0b0c0", "#FFFFFF", "#fff"]) | st.floats(0, 1e4), max_size=5)


@fuzz(300)
@given(st.one_of(JSON, st.builds(doc), st.lists(ENTRY | JSON, max_size=5).map(lambda h: doc(*h))))
def test_fuzz_any_json_is_hints_or_one_line_naming_where(value) -> None:
    try:
        hints = parse_hints(value)
    except CaeError as e:
        msg = str(e)
        assert "\n" not in msg and len(msg) < 300
        entries = value.get("hints") if isinstance(value, dict) and value.get("version") == 1 else None
        if isinstance(entries, list) and entries and "hints[" in msg:
            i = int(msg.split("hints[")[1].split("]")[0])
            assert i < len(entries)
        return
    assert all(isinstance(h, Hint) and h.x >= 0 and h.y >= 0 and len(h.color) == 7 for h in hints)
    assert parse_hints(hints_document(hints)) == hints


# ----------------------------------------------------------------------------- at the working scale
def test_a_hint_is_drawn_as_its_chroma_on_the_pixel_that_holds_it_the_rest_neutral() -> None:
    hints = hints_of([{"x": 10, "y": 5, "color": "#b02020"}])
    cmap, mask = hint_maps(hints, (50, 100), (25, 50))
    assert mask.sum() == 1 and mask[0, 0, 2, 5] == 1  # (10.5 / 2, 5.5 / 2) floored
    red = chroma(torch.tensor([0xb0, 0x20, 0x20]).float().div(255).view(1, 3, 1, 1))[0, :, 0, 0]
    assert torch.allclose(cmap[0, :, 2, 5], red)
    cmap[0, :, 2, 5] = 0.5
    assert (cmap == 0.5).all()


def test_a_radius_covers_the_working_pixels_whose_centres_lie_within_it() -> None:
    # photo 100x100 at 50x50: working pixel j's centre is at 2j + 0.5 in the photo's pixels
    hints = hints_of([{"x": 40, "y": 60, "color": "#2040ff", "radius": 6}])
    _, mask = hint_maps(hints, (100, 100), (50, 50))
    rows, cols = torch.meshgrid(torch.arange(50) * 2 + 0.5, torch.arange(50) * 2 + 0.5, indexing="ij")
    want = ((cols - 40) ** 2 + (rows - 60) ** 2 <= 36).float()
    assert torch.equal(mask[0, 0], want) and want.sum() > 20
    _, small = hint_maps(hints, (100, 100), (5, 5))  # a radius smaller than a working pixel: its one pixel
    assert small.sum() == 1 and small[0, 0, 3, 2] == 1


def test_a_later_hint_is_drawn_over_an_earlier_one() -> None:
    hints = hints_of([{"x": 4, "y": 4, "color": "#ff0000", "radius": 3}, {"x": 4, "y": 4, "color": "#0000ff"}])
    cmap, mask = hint_maps(hints, (10, 10), (10, 10))
    assert cmap[0, 0, 4, 4] > 0.9 and cmap[0, 0, 4, 3] < 0.4  # blue's Cb at the point, red's around it
    assert mask.sum() > 1


@fuzz(200)
@given(st.integers(8, 400), st.integers(8, 400), st.integers(0, 64), st.data())
def test_fuzz_a_hint_lands_on_the_working_pixel_that_shows_its_photo_pixel(w, h, short, data) -> None:
    """One bright pixel of a dark photo, downscaled as the photo path does: the working pixel that
    shows it brightest is the one its hint is drawn on (unless two tie)."""
    x, y = data.draw(st.integers(0, w - 1)), data.draw(st.integers(0, h - 1))
    work = working_shape(h, w, short)
    for v, n, m in ((x, w, work[1]), (y, h, work[0])):  # a pixel halfway between two working ones is a tie
        assume(abs((v + 0.5) * m / n % 1 - 0.5) > 0.02 or m == n)
    photo = torch.zeros(1, 1, h, w)
    photo[0, 0, y, x] = 1.0
    small = downscale(photo, short)
    assert tuple(small.shape[-2:]) == work
    assume((small == small.max()).sum() == 1)  # a tiny working copy can show the pixel equally in several
    _, mask = hint_maps([Hint(x, y, "#ffffff")], (h, w), work)
    assert mask.sum() == 1
    assert small.flatten().argmax() == mask.flatten().argmax()


# orientation -> how to store a displayed image so that exif_transpose shows it (the inverse transposition)
STORE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
         4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
         7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", sorted(STORE))
@pytest.mark.parametrize("size, working", [((240, 160), 40), ((97, 301), 0), ((640, 480), 256)])
def test_a_hint_lands_on_its_spot_in_a_rotated_jpeg(tmp_path, orientation, size, working) -> None:
    """A red spot at (x, y) of the photo as displayed, stored rotated with an EXIF orientation:
    the hint at (x, y) is drawn where the photo path's working copy shows the spot."""
    w, h = size
    x, y = int(w * 0.7), int(h * 0.2)
    shown = np.full((h, w, 3), 128, np.uint8)
    shown[y - 5:y + 6, x - 5:x + 6] = (220, 20, 20)
    stored = Image.fromarray(shown)
    stored = stored if STORE[orientation] is None else stored.transpose(STORE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "spot.jpg"
    stored.save(path, quality=95, exif=exif)
    rgb = rgb_of(open_file(path))
    assert rgb.shape[1:] == (h, w)  # the photo as displayed
    small = downscale(rgb.unsqueeze(0), working)
    _, mask = hint_maps([Hint(x, y, "#dc1414")], (h, w), tuple(small.shape[-2:]))
    cr = chroma(small)[0, 1]
    assert cr[mask[0, 0] > 0].item() > 0.5 + 0.9 * (cr.max().item() - 0.5)
    assert cr.max().item() > 0.7


def test_fractional_points_fall_in_the_pixel_that_holds_them() -> None:
    _, a = hint_maps([Hint(9.49, 3.0, "#ffffff")], (8, 20), (4, 10))  # 9.49 + 0.5 = 9.99: column 4
    _, b = hint_maps([Hint(9.51, 3.0, "#ffffff")], (8, 20), (4, 10))  # 10.01: column 5
    assert a[0, 0, 1].argmax() == 4 and b[0, 0, 1].argmax() == 5
    assert math.isclose(a.sum().item(), 1) and math.isclose(b.sum().item(), 1)
