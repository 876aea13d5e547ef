"""The Guide mode of `cae serve` in a real browser (Playwright, Debian's Chromium): hints placed
with the mouse and the keyboard recolour the photo, undo and redo restore the exact images, the
downloads reproduce with `cae colorize --hints`, a bad hints file is one line of error."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cae.apps.colorize import shipped_model_dir
from conftest import require
from test_serve_browser import KODAK, SLOW, browser, server_url  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow
PHOTO = KODAK / "kodim23.png"


@pytest.fixture
def page(browser, server_url: str, one_thread):  # noqa: ANN001, ANN201, F811
    require(shipped_model_dir("guided").is_dir(), "no shipped guided colorizer in src/cae/weights/guided")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.goto(server_url)
    pg.wait_for_selector("body[data-ready='1']")
    pg.check("#mode-guide")
    yield pg
    context.close()


def shown(page) -> str:  # noqa: ANN001
    """The data URL of the preview on screen, once it shows the current hints."""
    page.wait_for_selector("#guide-result[data-current='1']", timeout=SLOW)
    return page.get_attribute("#guide-result", "src")


def pixels(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def mean_cr(rgb: np.ndarray, x: int, y: int, r: int = 20) -> float:
    """The mean BT.601 Cr (0..255, 128 neutral) of the square of side 2r + 1 around (x, y)."""
    a = rgb[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].astype(np.float64)
    return float(np.mean(128 + 0.5 * a[..., 0] - 0.418688 * a[..., 1] - 0.081312 * a[..., 2]))


def open_photo(page, path: Path) -> str:  # noqa: ANN001
    require(path.is_file(), f"no photo at {path} (set CAE_KODAK_DIR)")
    page.set_input_files("#guide-file", str(path))
    return shown(page)


def click_at(page, fx: float, fy: float) -> None:  # noqa: ANN001
    """A click at the fractions (fx, fy) of the photo on screen."""
    box = page.locator("#guide-canvas").bounding_box()
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])


def saved_hints(page) -> dict:  # noqa: ANN001
    with page.expect_download() as download:
        page.click("#guide-save-hints")
    return json.loads(Path(download.value.path()).read_text())


def test_a_red_hint_turns_its_region_red_and_undo_redo_restore_the_images(page) -> None:  # noqa: ANN001
    """A red hint on the parrot's gray-green back raises the region's mean Cr by a clear amount;
    undo shows the previous image again, byte for byte, and redo the red one."""
    before = open_photo(page, PHOTO)
    page.fill("#guide-color", "#ff0000")  # no hint selected: the colour of the next one
    fx, fy = 0.5, 0.5
    click_at(page, fx, fy)
    page.wait_for_function("(b) => document.getElementById('guide-result').src !== b", arg=before, timeout=SLOW)
    red = shown(page)
    w, h = pixels(before).shape[1], pixels(before).shape[0]
    x, y = int(fx * w), int(fy * h)
    rise = mean_cr(pixels(red), x, y) - mean_cr(pixels(before), x, y)
    print(f"\nmean Cr around the hint: +{rise:.1f} (of 255)")
    assert rise > 8, f"a red hint raised the region's mean Cr by only {rise:.2f}"
    assert page.locator(".swatch").count() == 5  # suggestions at the new hint
    page.click("#guide-undo")
    assert shown(page) == before and np.array_equal(pixels(page.get_attribute("#guide-result", "src")), pixels(before))
    page.click("#guide-redo")
    assert shown(page) == red


def test_keyboard_places_moves_deletes_and_undoes(page) -> None:  # noqa: ANN001
    open_photo(page, PHOTO)
    page.focus("#guide-canvas")
    page.keyboard.press("Enter")
    placed = saved_hints(page)["hints"]
    assert len(placed) == 1 and (placed[0]["x"], placed[0]["y"]) == (384, 256)  # the middle of 768x512
    page.focus("#guide-canvas")  # saving the hints clicked a button
    page.keyboard.press("ArrowRight")
    moved = saved_hints(page)["hints"][0]
    assert moved["x"] > 384 and moved["y"] == 256
    page.focus("#guide-canvas")
    page.keyboard.press("Delete")
    assert saved_hints(page)["hints"] == []
    page.keyboard.press("Control+z")
    assert saved_hints(page)["hints"] == [moved]
    page.keyboard.press("Control+Shift+Z")
    assert saved_hints(page)["hints"] == []
    page.keyboard.press("Control+y")  # nothing left to redo: no change
    assert saved_hints(page)["hints"] == []
    shown(page)


def test_the_downloads_reproduce_with_cae_colorize_hints(page, tmp_path: Path) -> None:  # noqa: ANN001
    """A photo stored sideways (EXIF rotation) and larger than the preview: the hints JSON is in
    the displayed original's pixels, and `cae colorize --hints` on it gives the page's
    full-resolution PNG pixel for pixel (both are 8-bit PNGs of the same computation). The CLI
    runs with the server's torch thread count: with another, a few values may differ by 1/255
    (the float sums of the convolutions are split differently)."""
    require(PHOTO.is_file(), f"no photo at {PHOTO} (set CAE_KODAK_DIR)")
    photo = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: displayed turned by 90 degrees, 1024 wide and 1536 high
    Image.open(PHOTO).convert("RGB").resize((1536, 1024)).save(photo, quality=90, exif=exif)
    open_photo(page, photo)
    assert page.eval_on_selector("#guide-result", "e => [e.naturalWidth, e.naturalHeight]") == [683, 1024]
    for fx, fy, color in ((0.3, 0.25, "#2050e0"), (0.7, 0.6, "#e03010")):
        page.fill("#guide-color", color)
        before = page.get_attribute("#guide-result", "src")
        click_at(page, fx, fy)
        page.wait_for_function("(b) => document.getElementById('guide-result').src !== b", arg=before,
                               timeout=SLOW)
        page.keyboard.press("Escape")  # deselect: the next colour is for the next hint
    doc = saved_hints(page)
    assert doc["version"] == 1 and [h["color"] for h in doc["hints"]] == ["#2050e0", "#e03010"]
    for h, (fx, fy) in zip(doc["hints"], ((0.3, 0.25), (0.7, 0.6))):
        assert abs(h["x"] - fx * 1024) <= 3 and abs(h["y"] - fy * 1536) <= 3, h  # original pixels, not the preview's
    hints = tmp_path / "hints.json"
    hints.write_text(json.dumps(doc))
    with page.expect_download(timeout=SLOW) as download:
        page.click("#guide-download")
    page_png = np.asarray(Image.open(download.value.path()))
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "cae", "colorize", str(photo), "--hints", str(hints),
                           "--model", str(shipped_model_dir("guided")), "--out", str(out)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    assert proc.returncode == 0, proc.stderr
    cli_png = np.asarray(Image.open(out / "sideways.png"))
    assert page_png.shape == cli_png.shape == (1536, 1024, 3)
    diff = np.abs(page_png.astype(int) - cli_png.astype(int))
    print(f"\npage vs cae colorize: max difference {diff.max()}, {np.mean(diff > 0):.2%} of values differ")
    assert np.array_equal(page_png, cli_png)


def test_a_malformed_hints_file_is_one_line_and_the_page_keeps_working(page) -> None:  # noqa: ANN001
    before = open_photo(page, PHOTO)
    bad = {"version": 1, "hints": [{"x": 5, "y": 5, "color": "#00ff00"}, {"x": 9, "y": 9, "color": "red"}]}
    page.set_input_files("#guide-hints-file", files=[{"name": "mine.json", "mimeType": "application/json",
                                                      "buffer": json.dumps(bad).encode()}])
    error = page.locator("#guide-error")
    error.wait_for(state="visible", timeout=SLOW)
    assert error.inner_text() == 'mine.json: hints[1].color must be a hex colour "#rrggbb", got "red"'
    page.set_input_files("#guide-hints-file", files=[{"name": "junk.json", "mimeType": "application/json",
                                                      "buffer": b"{oops"}])
    # a function, not a bare expression: Playwright polls an expression with eval, which the page's CSP forbids
    page.wait_for_function("() => document.getElementById('guide-error').textContent.startsWith('junk.json: not JSON')",
                           timeout=SLOW)
    assert saved_hints(page)["hints"] == []  # nothing of the bad files was taken
    click_at(page, 0.4, 0.4)
    page.wait_for_function("(b) => document.getElementById('guide-result').src !== b", arg=before, timeout=SLOW)
    shown(page)
    good = {"version": 1, "radius": 4, "hints": [{"x": 100, "y": 200, "color": "#00FF00"}]}
    page.set_input_files("#guide-hints-file", files=[{"name": "ok.json", "mimeType": "application/json",
                                                      "buffer": json.dumps(good).encode()}])
    page.wait_for_selector("#guide-error", state="hidden", timeout=SLOW)
    assert saved_hints(page)["hints"] == [{"x": 100, "y": 200, "color": "#00ff00", "radius": 4}]


def test_drag_recolour_from_a_suggestion_and_reset(page) -> None:  # noqa: ANN001
    """Dragging a hint moves it (in the original's pixels), a suggested swatch recolours it, and
    Reset leaves no hint but can be undone."""
    open_photo(page, PHOTO)
    click_at(page, 0.25, 0.5)
    first = saved_hints(page)["hints"][0]
    box = page.locator("#guide-canvas").bounding_box()
    page.mouse.move(box["x"] + 0.25 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.3 * box["height"], steps=5)
    page.mouse.up()
    moved = saved_hints(page)["hints"]
    assert len(moved) == 1 and abs(moved[0]["x"] - 0.6 * 768) <= 3 and abs(moved[0]["y"] - 0.3 * 512) <= 3, moved
    assert first["x"] < moved[0]["x"]
    page.wait_for_selector(f"#guide-suggestions[data-point='{moved[0]['x']},{moved[0]['y']}']", timeout=SLOW)
    swatch = page.locator(".swatch").nth(1)
    color = swatch.get_attribute("data-color")
    swatch.click()
    assert saved_hints(page)["hints"][0]["color"] == color
    page.click("#guide-reset")
    assert saved_hints(page)["hints"] == []
    page.click("#guide-undo")
    assert saved_hints(page)["hints"][0]["color"] == color
    shown(page)


def test_a_photo_the_server_let_go_is_sent_again_without_losing_the_hints(page) -> None:  # noqa: ANN001
    """The server keeps MAX_PHOTOS guided photos: after that many other uploads it has dropped the
    page's photo (404), and the next change sends the photo again and shows its image, no error."""
    from cae.apps.serve.guide import MAX_PHOTOS

    open_photo(page, PHOTO)
    click_at(page, 0.3, 0.5)
    shown(page)
    old = page.evaluate("() => guide.photo.id")
    other = base64.b64encode(PHOTO.read_bytes()).decode()
    page.evaluate("""async ([data, n]) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        for (let i = 0; i < n; i++) {
          const form = new FormData();
          form.append("model", guide.model);
          form.append("file", new Blob([bytes], { type: "image/png" }), `other-${i}.png`);
          const r = await fetch("/api/guide/photo", { method: "POST", body: form });
          if (!r.ok) throw new Error(`upload ${i}: ${r.status}`);
        }
        const gone = await fetch(`/api/guide/${guide.photo.id}`, { method: "POST",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify({ version: 1, hints: [] }) });
        if (gone.status !== 404) throw new Error(`the page's photo is still kept: ${gone.status}`);
    }""", [other, MAX_PHOTOS])
    click_at(page, 0.7, 0.5)
    shown(page)
    assert page.evaluate("() => guide.photo.id") != old
    assert page.locator("#guide-error").is_hidden()
    assert len(saved_hints(page)["hints"]) == 2
    page.click("#guide-undo")
    shown(page)  # the one-hint state, from the page's cache
