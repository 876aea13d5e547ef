"""The docs' screenshot of `cae serve` stays true: docs/screenshots.py takes it from the real page
with the shipped colorizer, and the committed docs/serve.png is what that code last produced for
the shipped weights and page as they are now (docs/serve.png.json records both)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import require

REPO = Path(__file__).resolve().parents[1]
FIX = "regenerate it: make screenshots (python docs/screenshots.py)"


def load_screenshots():  # noqa: ANN201 - the module docs/screenshots.py
    spec = importlib.util.spec_from_file_location("screenshots", REPO / "docs" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shots = load_screenshots()


def test_the_committed_screenshot_shows_the_shipped_colorizer_and_page() -> None:
    """Retraining the shipped colorizer, or changing the page, without retaking the picture fails here."""
    assert shots.SHOT.is_file() and shots.SIDECAR.is_file(), f"docs/serve.png or its .json is missing: {FIX}"
    recorded = json.loads(shots.SIDECAR.read_text())
    assert recorded["shows"] == shots.current_fingerprint(), \
        f"docs/serve.png was taken with other colorizer weights or another page than the shipped ones: {FIX}"
    assert recorded["png_sha256"] == shots.sha256(shots.SHOT), f"docs/serve.png was not written by docs/screenshots.py: {FIX}"


def test_the_fingerprint_changes_with_any_file_it_covers(tmp_path: Path) -> None:
    a, b = tmp_path / "weights", tmp_path / "page"
    for folder in (a, b):
        folder.mkdir()
        (folder / "x.bin").write_bytes(b"one")
    before = shots.fingerprint(a, b)
    (b / "x.bin").write_bytes(b"two")
    assert shots.fingerprint(a, b) != before and set(shots.fingerprint(a, b)) == {"weights", "page"}


@pytest.mark.slow
def test_the_screenshot_code_shows_the_shipped_colorizer_on_the_page(tmp_path: Path) -> None:
    """docs/screenshots.py, run into a temporary folder (the checkout is not written): the page
    colorizes the Kodak photo with the shipped colorizer and its select names that model's
    architecture, target and test PSNR as the shipped files record them."""
    require(all(importlib.util.find_spec(m) for m in ("starlette", "uvicorn", "python_multipart", "playwright")),
            "the test extra is not installed: pip install -e '.[test]'")
    require(Path(shots.CHROMIUM).is_file(), "no chromium at /usr/bin/chromium: apt-get install chromium")
    photo = shots.kodak_dir() / shots.PHOTO
    require(photo.is_file(), f"no Kodak photo at {photo} (set CAE_KODAK_DIR)")
    from cae.core.config import load_config

    weights = shots.colorizer_dir()
    cfg = load_config(weights / "config.toml")
    psnr = json.loads((weights / "test_metrics.json").read_text())["psnr"]
    dest = tmp_path / "serve.png"
    shown = shots.take(dest, photo)
    assert f"{cfg.arch}, {cfg.target}" in shown["label"] and f"{psnr:.2f} dB" in shown["label"], shown
    assert "colorized by shipped/colorizer" in shown["status"] and "768×512" in shown["status"], shown
    with Image.open(dest) as img:
        assert img.format == "PNG" and img.width == shots.VIEWPORT["width"] and img.height >= 600
