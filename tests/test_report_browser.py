"""The HTML report in a real browser: headless Chromium renders it with every figure embedded."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import QuickRun, require
from PIL import Image

from cae.report import SECTIONS

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def chromium_installed() -> None:
    """Autouse, so every test here needs it, checked before `rendered` starts the browser."""
    require(CHROMIUM is not None, "no chromium binary on PATH (apt-get install chromium; .ci/run installs it)")


def _chromium(html: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args, html.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def rendered(quick_reproduce: QuickRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The DOM after Chromium loaded report.html, and a 1280x4000 screenshot of it."""
    tmp = tmp_path_factory.mktemp("browser")
    html = quick_reproduce.out / "report.html"
    dom = _chromium(html, tmp / "profile-dom", "--dump-dom")
    assert dom.returncode == 0 and "<html" in dom.stdout, dom.stderr[-2000:]
    shot = tmp / "report.png"
    proc = _chromium(html, tmp / "profile-shot", f"--screenshot={shot}", "--window-size=1280,4000")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    return dom.stdout, shot


def test_dom_has_every_section(rendered: tuple[str, Path]) -> None:
    dom, _ = rendered
    for key, title in SECTIONS:
        assert re.search(rf'<h2 id="{key}">{re.escape(title)}</h2>', dom), title


def test_every_image_is_an_embedded_valid_png(rendered: tuple[str, Path], quick_reproduce: QuickRun) -> None:
    dom, _ = rendered
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', dom)
    # one <img> per figure referenced by the Markdown report
    figures = re.findall(r"^!\[Figure \d+\]\(([^)]+)\)", (quick_reproduce.out / "report.md").read_text(), re.M)
    assert len(srcs) == len(figures) >= 6
    for src, rel in zip(srcs, figures):
        assert src.startswith("data:image/png;base64,"), src[:60]
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw == (quick_reproduce.out / rel).read_bytes()
        with Image.open(io.BytesIO(raw)) as im:
            im.verify()
        with Image.open(io.BytesIO(raw)) as im:
            assert im.format == "PNG" and im.width > 50 and im.height > 50


def test_screenshot_is_not_blank(rendered: tuple[str, Path]) -> None:
    _, shot = rendered
    with Image.open(shot) as im:
        assert im.size == (1280, 4000)
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 20, "the screenshot is (nearly) one colour"
        lo, hi = zip(*rgb.getextrema())
        assert min(lo) < 60 and max(hi) > 200  # dark text on a light page


MAX_WORDS = 120  # a paragraph a reader takes in at a glance; one finding per statement


class _Paragraphs(HTMLParser):
    """The text of every paragraph-like block (p, li, figcaption, caption), each without the
    blocks nested in it (a list item's own words, not its sub-list's)."""

    BLOCKS = {"p", "li", "figcaption", "caption"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[list[str]] = []
        self.done: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:  # noqa: ARG002
        if tag in self.BLOCKS:
            self.open.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag in self.BLOCKS and self.open:
            self.done.append(" ".join(self.open.pop()))

    def handle_data(self, data: str) -> None:
        if self.open:
            self.open[-1].append(data)


def paragraphs(html: str) -> list[str]:
    parser = _Paragraphs()
    parser.feed(html)
    return [" ".join(p.split()) for p in parser.done if p.strip()]


def test_paragraph_words_are_counted_per_block() -> None:
    text = paragraphs("<p>one two</p><ul><li>three <b>four</b><ul><li>five six seven</li></ul></li></ul>")
    assert text == ["one two", "five six seven", "three four"]


def test_no_paragraph_of_the_report_is_over_the_limit(rendered: tuple[str, Path]) -> None:
    """The report reads in five minutes: as Chromium loaded it, no paragraph is over MAX_WORDS."""
    dom, _ = rendered
    found = paragraphs(dom)
    assert len(found) > 30  # the report's prose, tables' captions and figures' captions are all seen
    longest = max(found, key=lambda p: len(p.split()))
    print(f"\nlongest paragraph: {len(longest.split())} words")
    assert len(longest.split()) <= MAX_WORDS, longest[:300]
