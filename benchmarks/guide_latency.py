"""Latency of the Guide mode of `cae serve`, as a person sees it: Playwright drives the system
Chromium against the real server (uvicorn in a thread of this process).

For each photo, the median over --clicks clicks (each places a new hint, so no preview is
cached) of the time from the pointer press to the updated preview on screen (its `load`
event, then the next animation frame), measured with performance.now() in the page; the
server's own seconds per preview beside it. Then the median over --downloads of the time from
the click on "Download the result" to the full-resolution PNG saved. Photos: a Kodak photo
(768x512) and a 12-megapixel JPEG made from it (4000x3000, upscaled, in a temporary folder).
The machine's load average is printed: on a shared machine the figures move with it.

    python benchmarks/guide_latency.py [--clicks 10] [--downloads 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
KODAK = Path(os.environ.get("CAE_KODAK_DIR") or REPO.parent / "shared" / "datasets" / "kodak-dev")
PHOTO = KODAK / "kodim23.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
BIG = (4000, 3000)
TIMEOUT = 600_000  # ms: a busy shared machine can be very slow

# resolves with the ms from the next pointer press on the photo to its new preview on screen
WATCH = """() => { window.guideLatency = new Promise((resolve) => {
  let t0 = null;
  const canvas = document.getElementById('guide-canvas'), img = document.getElementById('guide-result');
  canvas.addEventListener('pointerdown', () => { t0 = performance.now(); }, { once: true, capture: true });
  const seen = new MutationObserver(() => {
    if (t0 === null || img.dataset.current !== '1') return;
    seen.disconnect();
    requestAnimationFrame(() => resolve(performance.now() - t0));
  });
  seen.observe(img, { attributes: true, attributeFilter: ['data-current'] });
}); }"""


def click_latencies(page, clicks: int, server_seconds: list[float]) -> list[float]:  # noqa: ANN001
    """ms from each click to its preview on screen; each click a new hint at another point."""
    box = page.locator("#guide-canvas").bounding_box()
    out = []
    for i in range(clicks):
        server_seconds.clear() if i == 0 else None
        page.evaluate(WATCH)
        fx, fy = 0.1 + 0.8 * ((i * 0.37) % 1), 0.1 + 0.8 * ((i * 0.61) % 1)
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        out.append(page.evaluate("window.guideLatency"))
        page.keyboard.press("Escape")
    return out


def download_seconds(page, n: int) -> list[float]:  # noqa: ANN001
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        with page.expect_download(timeout=TIMEOUT) as download:
            page.click("#guide-download")
        download.value.path()  # waits until the file is saved
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clicks", type=int, default=10)
    p.add_argument("--downloads", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads in the server (default: torch's own)")
    a = p.parse_args()
    import torch
    from playwright.sync_api import sync_playwright

    from cae.apps.serve.app import create_app, running
    from cae.core.device import cpu_features, cpu_model

    if a.threads:
        torch.set_num_threads(a.threads)
    flags = ", ".join(name for name, on in cpu_features().items() if on) or "no AVX-512/AMX"
    print(f"CPU: {cpu_model()} ({flags}), {os.cpu_count()} cores; torch threads {torch.get_num_threads()}; "
          f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, running(create_app()) as url, sync_playwright() as pw:
        big = Path(tmp) / "big.jpg"
        Image.open(PHOTO).convert("RGB").resize(BIG, Image.Resampling.BICUBIC).save(big, quality=92)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True).new_page()
        page.set_default_timeout(TIMEOUT)
        server: list[float] = []
        page.on("response", lambda r: server.append(r.json()["seconds"])
                if r.request.method == "POST" and r.url.count("/") == 5 and "/api/guide/" in r.url
                and r.ok else None)
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        page.check("#mode-guide")
        for photo, name in ((PHOTO, "768x512 kodim23"), (big, "4000x3000 JPEG (12 MP)")):
            page.set_input_files("#guide-file", str(photo))
            page.wait_for_selector("#guide-result[data-current='1']")
            ms = click_latencies(page, a.clicks, server)
            print(f"{name}: click to preview on screen, median {statistics.median(ms):.0f} ms "
                  f"(min {min(ms):.0f}, max {max(ms):.0f}, n={len(ms)}); server compute per preview median "
                  f"{1000 * statistics.median(server):.0f} ms", flush=True)
        secs = download_seconds(page, a.downloads)
        print(f"4000x3000 full-resolution download (click to PNG saved): median {statistics.median(secs):.2f} s "
              f"(min {min(secs):.2f}, max {max(secs):.2f}, n={len(secs)})")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
