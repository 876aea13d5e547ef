"""The docs' screenshot of `cae serve` (docs/serve.png), taken from the real page in Chromium.

    python docs/screenshots.py          # or: make screenshots

starts the server on a free loopback port, colorizes a Kodak photo on the page with the shipped
colorizer, and writes docs/serve.png with docs/serve.png.json beside it: the SHA-256 of the
shipped colorizer's files and of the page's files the picture was taken with, and of the picture.
tests/test_screenshots.py takes the same screenshot into a temporary folder (the page must name
the shipped colorizer) and fails when the committed picture was taken with other weights or
another page, so the README's picture cannot show a colorizer that is no longer shipped.

Needs the test extra (Playwright) and Chromium (/usr/bin/chromium; `apt-get install chromium`);
the photo is kodim23.png from CAE_KODAK_DIR, else ../shared/datasets/kodak-dev beside the clone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHOT = REPO / "docs" / "serve.png"
SIDECAR = SHOT.with_name(SHOT.name + ".json")
PHOTO = "kodim23.png"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 700}  # the page's height with a result: no empty band below
SLOW = 120_000  # ms to wait for the colorized photo: generous, for a busy 2-core machine


def kodak_dir() -> Path:
    return Path(os.environ.get("CAE_KODAK_DIR") or REPO.parent / "shared" / "datasets" / "kodak-dev")


def colorizer_dir() -> Path:
    from cae.core.runs import shipped_run

    return shipped_run("colorizer")


def page_dir() -> Path:
    import cae.apps.serve

    return Path(cae.apps.serve.__file__).parent / "static"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(*folders: Path) -> dict[str, dict[str, str]]:
    """{folder name: {file name: SHA-256}} of the files directly in each folder."""
    return {f.name: {p.name: sha256(p) for p in sorted(f.iterdir()) if p.is_file()} for f in folders}


def current_fingerprint() -> dict[str, dict[str, str]]:
    """What the picture shows: the shipped colorizer (weights, config, decoding) and the page."""
    return fingerprint(colorizer_dir(), page_dir())


@contextmanager
def running_server(data_dir: Path | None = None) -> Iterator[str]:
    """The real app under uvicorn in a thread, on a loopback port the OS picked; yields its URL."""
    from cae.apps.serve.app import create_app, running

    with running(create_app(data_dir=data_dir)) as url:
        yield url


@contextmanager
def chromium():  # noqa: ANN201 - a Playwright Browser
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def colorize_on_page(browser, url: str, photo: Path, dest: Path) -> dict[str, str]:  # noqa: ANN001
    """Colorize `photo` on the page with the model it offers first (the shipped colorizer), save
    the page as PNG at `dest`; returns the chosen model's label and the status line."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        warm_up(page, url, photo)
        page.set_input_files("#colorize-file", str(photo))
        expect(page.locator("#colorize-status")).to_contain_text("colorized by", timeout=SLOW)
        page.wait_for_function("document.querySelector('#colorize-result').complete")
        page.screenshot(path=str(dest), full_page=True)
        label = page.eval_on_selector("#colorize-model", "s => s.options[s.selectedIndex].text")
        return {"label": label, "status": page.inner_text("#colorize-status")}
    finally:
        context.close()


def warm_up(page, url: str, photo: Path) -> None:  # noqa: ANN001
    """One colorization of the photo by the page's first model before the picture's: the model is
    loaded then, so the time the page shows is a photo's, not the model's first load."""
    model = page.request.get(f"{url}/api/models").json()["colorize"][0]["id"]
    answer = page.request.post(f"{url}/api/colorize", timeout=SLOW, multipart={
        "model": model, "file": {"name": photo.name, "mimeType": "image/png", "buffer": photo.read_bytes()}})
    if not answer.ok:
        raise RuntimeError(f"warm-up colorization failed: HTTP {answer.status} {answer.text()[:200]}")


def take(dest: Path, photo: Path | None = None) -> dict[str, str]:
    """The screenshot at `dest`, from a server and a browser started for it."""
    photo = photo or kodak_dir() / PHOTO
    if not photo.is_file():
        raise SystemExit(f"no photo at {photo}: set CAE_KODAK_DIR to the folder holding {PHOTO}")
    with running_server() as url, chromium() as browser:
        return colorize_on_page(browser, url, photo, dest)


def main() -> int:
    from cae.core.runs import atomic_write_bytes, write_json

    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / SHOT.name
        shown = take(shot)
        data = shot.read_bytes()
    atomic_write_bytes(SHOT, data)
    write_json(SIDECAR, {"photo": PHOTO, "model": shown["label"], "png_sha256": hashlib.sha256(data).hexdigest(),
                         "shows": current_fingerprint()})
    print(f"wrote {SHOT.relative_to(REPO)} ({shown['label']}; {shown['status']}) and {SIDECAR.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
