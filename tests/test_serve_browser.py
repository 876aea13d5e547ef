"""`cae serve` in a real browser: Playwright drives Debian's headless Chromium against the real
server (uvicorn on a free loopback port), as a person would use the page."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require
from helpers import loaded_image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
CIFAR = Path(os.environ.get("CAE_DATA_DIR") or SHARED / "cifar-10-batches-bin")
KODAK = Path(os.environ.get("CAE_KODAK_DIR") or SHARED / "kodak-dev")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
SLOW = 120_000  # ms: generous, for a busy 2-core machine
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """The real app under uvicorn in a thread, on a loopback port the OS picked."""
    require(all(importlib.util.find_spec(m) for m in ("starlette", "uvicorn", "python_multipart")),
            "the serve extra is not installed: pip install -e '.[test]'")
    from cae.apps.serve.app import create_app, running

    with running(create_app(data_dir=CIFAR)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201 - a generator fixture
    require(importlib.util.find_spec("playwright") is not None, "playwright is not installed: pip install -e '.[test]'")
    require(Path(CHROMIUM).is_file(), "no chromium at /usr/bin/chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server_url: str):  # noqa: ANN001, ANN201
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.goto(server_url)
    pg.wait_for_selector("body[data-ready='1']")
    yield pg
    context.close()


def colorfulness(img: Image.Image) -> float:
    """Mean |R-G| + |G-B| over the pixels: 0 for a gray image."""
    a = np.asarray(img.convert("RGB"), dtype=np.int32)
    return float(np.mean(np.abs(a[..., 0] - a[..., 1]) + np.abs(a[..., 1] - a[..., 2])))


def test_colorize_a_kodak_photo(page) -> None:  # noqa: ANN001
    """Uploading a real 768x512 photo shows gray, colorized and original side by side, and the
    download link gives a colored PNG at the photo's full resolution."""
    from playwright.sync_api import expect

    photo = KODAK / "kodim23.png"
    require(photo.is_file(), f"no Kodak photo at {photo} (set CAE_KODAK_DIR)")
    page.set_input_files("#colorize-file", str(photo))
    expect(page.locator("#colorize-status")).to_contain_text("colorized by shipped/colorizer", timeout=SLOW)
    for img in ("#colorize-gray", "#colorize-result", "#colorize-original"):
        assert page.eval_on_selector(img, "e => [e.complete, e.naturalWidth, e.naturalHeight]") == [True, 768, 512]
    with page.expect_download() as download:
        page.click("#colorize-download")
    with Image.open(download.value.path()) as result:
        assert result.format == "PNG" and result.size == loaded_image(photo).size == (768, 512)
        assert colorfulness(result) > 5, "the result is (nearly) gray"


def test_reconstruct_a_cifar_image_from_the_grid(page) -> None:  # noqa: ANN001
    """Picking a grid image shows its reconstruction, PSNR, the latent size 1,024 with its
    formula, and the 16 latent channels."""
    from playwright.sync_api import expect

    require((CIFAR / "test_batch.bin").is_file(), f"no CIFAR-10 data at {CIFAR} (set CAE_DATA_DIR)")
    page.click("#tab-reconstruct")
    expect(page.locator("#sample-grid .sample")).to_have_count(48, timeout=SLOW)
    page.locator("#sample-grid .sample").nth(7).click()
    expect(page.locator("#latent-size")).to_have_text("1,024 values (16 × 8 × 8 = 1,024)", timeout=SLOW)
    expect(page.locator("#latent-shape")).to_have_text("16 × 8 × 8")
    expect(page.locator("#latent-formula")).to_contain_text("16*((8-3+2*1)/1+1)^2 = 1,024")
    expect(page.locator("#reconstruct-psnr")).to_contain_text(" dB")
    expect(page.locator("#latent-channels img")).to_have_count(16)
    assert page.eval_on_selector("#reconstruct-output", "e => [e.naturalWidth, e.naturalHeight]") == [32, 32]
    expect(page.locator("#reconstruct-source")).to_contain_text("CIFAR-10 test image #7")
    if os.environ.get("CAE_REVIEW_SHOTS"):
        page.screenshot(path=os.environ["CAE_REVIEW_SHOTS"], full_page=True)


def test_a_garbage_upload_shows_an_error_then_a_valid_one_works(page) -> None:  # noqa: ANN001
    """A broken file is refused with a message on the page; the next, valid upload is colorized."""
    from playwright.sync_api import expect

    page.set_input_files("#colorize-file", files=[{"name": "broken.png", "mimeType": "image/png",
                                                   "buffer": b"\x89PNG\r\n\x1a\n this is no image"}])
    expect(page.locator("#colorize-error")).to_contain_text("not an image Pillow can read")
    expect(page.locator("#colorize-results")).to_be_hidden()
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(buf, format="PNG")
    page.set_input_files("#colorize-file", files=[{"name": "small.png", "mimeType": "image/png",
                                                   "buffer": buf.getvalue()}])
    expect(page.locator("#colorize-status")).to_contain_text("small.png: 80×48", timeout=SLOW)
    expect(page.locator("#colorize-error")).to_be_hidden()
    assert page.eval_on_selector("#colorize-result", "e => [e.naturalWidth, e.naturalHeight]") == [80, 48]


def test_the_model_card_opens_beside_the_picker(page) -> None:  # noqa: ANN001
    card = page.locator("#colorize-card")
    assert card.locator("summary").is_visible()
    card.locator("summary").click()
    card.locator("h1", has_text="Model card: colorizer").wait_for(timeout=SLOW)
    assert card.locator("h2", has_text="Known failure modes").is_visible()
    page.click("#tab-reconstruct")
    panel = page.locator("#reconstruct-card")
    panel.locator("summary").click()
    panel.locator("h1", has_text="Model card: reference").wait_for(timeout=SLOW)
