"""`cae serve`'s JSON API through Starlette's TestClient: models, uploads, limits, refusals."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cae.cli import main
from conftest import require
from cae.apps.colorize import shipped_model_dir

REPO = Path(__file__).resolve().parents[1]
CIFAR = Path(os.environ.get("CAE_DATA_DIR") or REPO.parent / "shared" / "datasets" / "cifar-10-batches-bin")
BASE_URL = "http://127.0.0.1"  # the app only answers requests addressed to a loopback name
# Starlette >= 1.x prefers the httpx2 fork for its TestClient; httpx still works everywhere
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def has_serve_extra() -> bool:
    return all(importlib.util.find_spec(m) for m in ("starlette", "uvicorn", "python_multipart", "httpx"))


def png(h: int, w: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def image_of(data_url: str) -> Image.Image:
    head, body = data_url.split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(body)))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --runs tree: two finished runs (copies of the shipped ones), an unfinished and a broken
    one that must not be listed, and a report one level down."""
    root = tmp_path_factory.mktemp("runs")
    shutil.copytree(shipped_model_dir("colorizer"), root / "study" / "best")
    shutil.copytree(shipped_model_dir("reference"), root / "ref")
    shutil.copytree(shipped_model_dir("reference"), root / "unfinished")
    (root / "unfinished" / "test_metrics.json").unlink()
    shutil.copytree(shipped_model_dir("reference"), root / "broken")
    (root / "broken" / "config.toml").write_text("task = [")
    (root / "quick").mkdir()
    (root / "quick" / "report.html").write_text("<!DOCTYPE html><title>report</title><p>the study</p>")
    return root


@pytest.fixture(scope="module")
def client(runs_dir: Path):  # noqa: ANN201 - a generator fixture
    require(has_serve_extra(), "the serve extra is not installed: pip install -e '.[test]'")
    from starlette.testclient import TestClient

    from cae.apps.serve.app import create_app

    with TestClient(create_app(runs_dir, data_dir=CIFAR), base_url=BASE_URL) as c:
        yield c


def colorize(client, data: bytes, model: str = "shipped/colorizer", name: str = "photo.png"):  # noqa: ANN001, ANN201
    return client.post("/api/colorize", data={"model": model}, files={"file": (name, data, "image/png")})


def test_models_lists_shipped_weights_finished_runs_and_reports(client) -> None:  # noqa: ANN001
    answer = client.get("/api/models").json()
    assert [m["id"] for m in answer["colorize"]] == ["shipped/colorizer", "runs/study/best"]
    assert [m["id"] for m in answer["reconstruct"]] == ["shipped/reference", "runs/ref"]
    psnr = json.loads((shipped_model_dir("reference") / "test_metrics.json").read_text())["psnr"]
    assert f"test PSNR {psnr:.2f} dB" in answer["reconstruct"][1]["label"]  # runs/ref is a copy of it
    assert answer["reports"] == [{"name": "quick", "url": "/report/quick"}]
    report = client.get("/report/quick")
    assert report.status_code == 200 and "the study" in report.text
    assert "default-src 'none'" in report.headers["content-security-policy"]
    for url in ("/report", "/report/ref", "/report/..%2Fquick", "/static/../app.py"):
        assert client.get(url).status_code == 404, url


def test_colorize_a_small_image_returns_a_png_of_the_same_size(client) -> None:  # noqa: ANN001
    r = colorize(client, png(23, 37), name="tiny photo?.png")
    assert r.status_code == 200, r.text
    answer = r.json()
    result = image_of(answer["result"])
    assert result.format == "PNG" and result.size == (37, 23) and result.mode == "RGB"
    assert image_of(answer["gray"]).size == image_of(answer["original"]).size == (37, 23)
    assert answer["filename"] == "tiny_photo-colorized.png"  # no path or odd characters reach the download name


def test_a_transparent_photo_stays_transparent(client) -> None:  # noqa: ANN001
    rgba = Image.open(io.BytesIO(png(23, 37))).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    r = colorize(client, buf.getvalue())
    assert r.status_code == 200, r.text
    result = image_of(r.json()["result"])
    assert result.mode == "RGBA" and np.array_equal(np.asarray(result.getchannel("A")), np.asarray(rgba.getchannel("A")))


def test_garbage_upload_is_refused_with_a_message_and_the_next_request_works(client) -> None:  # noqa: ANN001
    for junk in (b"definitely not an image", b"", png(20, 20)[:60]):
        r = colorize(client, junk)
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["error"]  # a message the page shows
    assert colorize(client, png(16, 16)).status_code == 200


def test_oversize_upload_is_refused_while_reading(runs_dir: Path) -> None:
    require(has_serve_extra(), "the serve extra is not installed")
    from starlette.testclient import TestClient

    from cae.apps.serve.app import create_app

    with TestClient(create_app(runs_dir, max_bytes=20_000, max_pixels=50 * 50), base_url=BASE_URL) as c:
        big = png(120, 120)  # ~43 KB of noise
        declared = colorize(c, big)
        assert declared.status_code == 413 and "larger than the limit" in declared.json()["error"]
        # no Content-Length (chunked): the counting receive wrapper is what stops it
        chunks = iter([b"--x\r\n", b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n', big])
        streamed = c.post("/api/colorize", content=chunks, headers={"content-type": "multipart/form-data; boundary=x"})
        assert streamed.status_code == 413, streamed.text
        pixels = colorize(c, png(60, 60))  # few bytes, too many pixels
        assert pixels.status_code == 413 and "pixels" in pixels.json()["error"]
        assert colorize(c, png(40, 40)).status_code == 200


def test_a_model_id_not_in_the_list_is_refused(client, runs_dir: Path) -> None:  # noqa: ANN001
    for model in ("../../etc/passwd", str(runs_dir / "ref"), "runs/ref/..", "runs/unfinished", "shipped/reference"):
        r = colorize(client, png(8, 8), model=model)
        assert r.status_code == 400 and "choose one of: shipped/colorizer, runs/study/best" in r.json()["error"], model
    r = client.post("/api/reconstruct", data={"model": "runs/broken", "sample": "0"})
    assert r.status_code == 400 and "unknown reconstruct model" in r.json()["error"]


def smooth_png(h: int, w: int, seed: int = 0) -> bytes:
    """A photo-like image (a coarse random colour field, smoothly upscaled), unlike noise something
    an autoencoder reconstructs."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8))
    buf = io.BytesIO()
    coarse.resize((w, h), Image.Resampling.BICUBIC).save(buf, format="PNG")
    return buf.getvalue()


def constant_output_psnr(img: Image.Image) -> float:
    """The PSNR of the best constant image (each channel's mean) against `img`: what a network
    answering flat gray or one colour scores at most."""
    a = np.asarray(img.convert("RGB"), dtype=np.float64) / 255
    return float(10 * np.log10(1 / a.var(axis=(0, 1)).mean()))


def assert_clearly_better_than_constant(answer: dict, margin_db: float) -> None:
    """The answer's PSNR is that of its input and output images, and `margin_db` above the best
    constant output's."""
    x, y = (np.asarray(image_of(answer[k]).convert("RGB"), dtype=np.float64) / 255 for k in ("input", "output"))
    assert abs(10 * np.log10(1 / np.mean((x - y) ** 2)) - answer["psnr"]) < 0.2  # PNGs are 8-bit
    baseline = constant_output_psnr(image_of(answer["input"]))
    assert answer["psnr"] > baseline + margin_db, (answer["psnr"], baseline)


def test_reconstruct_an_upload_through_the_reference(client) -> None:  # noqa: ANN001
    r = client.post("/api/reconstruct", data={"model": "shipped/reference"},
                    files={"file": ("wide.png", smooth_png(40, 90), "image/png")})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["latent"]["size"] == 1024 and answer["latent"]["shape"] == [16, 8, 8]
    assert answer["latent"]["formula"] == "16*((8-3+2*1)/1+1)^2 = 1,024"
    assert len(answer["channels"]) == 16 and image_of(answer["channels"][0]).size == (8, 8)
    assert image_of(answer["input"]).size == image_of(answer["output"]).size == (32, 32)
    assert_clearly_better_than_constant(answer, margin_db=10)


def test_an_upload_of_deep_gray_keeps_its_brightness(client) -> None:  # noqa: ANN001
    """A 32-bit integer TIFF of 8-bit values is read on its own scale (`white_level`), as its
    8-bit twin is, not as 16-bit (black)."""
    gray = np.arange(48 * 48, dtype=np.int32).reshape(48, 48) % 256
    answers = []
    for name, img in (("deep.tif", Image.fromarray(gray, "I")), ("flat.png", Image.fromarray(gray.astype(np.uint8)))):
        buf = io.BytesIO()
        img.save(buf, format="TIFF" if name.endswith(".tif") else "PNG")
        r = client.post("/api/reconstruct", data={"model": "shipped/reference"},
                        files={"file": (name, buf.getvalue(), "application/octet-stream")})
        assert r.status_code == 200, r.text
        answers.append(np.asarray(image_of(r.json()["input"]), dtype=np.float32))
    assert answers[1].mean() > 50 and np.abs(answers[0] - answers[1]).max() <= 1


def test_reconstruct_a_cifar_test_image(client) -> None:  # noqa: ANN001
    require((CIFAR / "test_batch.bin").is_file(), f"no CIFAR-10 data at {CIFAR} (set CAE_DATA_DIR)")
    samples = client.get("/api/samples").json()
    assert samples["available"] and len(samples["images"]) == 48
    answer = client.post("/api/reconstruct", data={"model": "runs/ref", "sample": "5"}).json()
    assert answer["latent"]["size"] == 1024 and answer["source"].startswith("CIFAR-10 test image #5")
    assert_clearly_better_than_constant(answer, margin_db=6)  # the reference reaches ~24 dB on average
    assert client.post("/api/reconstruct", data={"model": "runs/ref", "sample": "48"}).status_code == 400


def test_without_cifar_data_the_grid_says_so(tmp_path: Path) -> None:
    require(has_serve_extra(), "the serve extra is not installed")
    from starlette.testclient import TestClient

    from cae.apps.serve.app import create_app

    with TestClient(create_app(data_dir=tmp_path / "nowhere"), base_url=BASE_URL) as c:
        samples = c.get("/api/samples").json()
        assert not samples["available"] and "Uploading a photo still works" in samples["message"]
        r = c.post("/api/reconstruct", data={"model": "shipped/reference", "sample": "0"})
        assert r.status_code == 400 and "No CIFAR-10 data" in r.json()["error"]
        for shown in (samples["message"], r.json()["error"]):  # the server's folders stay on the server
            assert str(tmp_path) not in shown and "<server path>" in shown, shown


def test_an_unexpected_error_is_a_500_and_the_server_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    require(has_serve_extra(), "the serve extra is not installed")
    from starlette.testclient import TestClient

    from cae.apps.serve import jobs
    from cae.apps.serve.app import create_app

    def broken(*args: object) -> dict:
        raise RuntimeError("a bug")

    with TestClient(create_app(), base_url=BASE_URL, raise_server_exceptions=False) as c:
        monkeypatch.setattr(jobs, "colorize_answer", broken)
        r = colorize(c, png(8, 8))
        assert r.status_code == 500 and "the server keeps running" in r.json()["error"]
        monkeypatch.undo()
        assert colorize(c, png(8, 8)).status_code == 200


def test_requests_for_a_foreign_host_name_are_refused(client) -> None:  # noqa: ANN001
    # a page on another site that rebinds its DNS name to 127.0.0.1 still sends its own Host
    assert client.get("/api/models", headers={"host": "attacker.example:8000"}).status_code == 400
    assert client.get("/", headers={"host": "localhost:8000"}).status_code == 200


def test_cae_serve_without_the_extra_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # an import of it now fails as if not installed
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.strip() == "cae: error: cae serve needs the serve extra: pip install 'cae[serve]'"


def test_a_big_photo_is_answered_with_previews_and_a_full_resolution_download(client) -> None:  # noqa: ANN001
    """The JSON carries display-sized previews; the full-resolution PNG, the very pixels of
    `Colorizer.colorize`, comes from the download route; ids are unguessable and checked."""
    from cae.apps.serve.images import PREVIEW_SIDE
    from cae.core.photo import Colorizer

    data = smooth_png(60, PREVIEW_SIDE + 476)
    r = colorize(client, data, name="wide.png")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["width"], answer["height"]) == (PREVIEW_SIDE + 476, 60)
    for key in ("result", "gray", "original"):
        assert image_of(answer[key]).size == (PREVIEW_SIDE, 41), key
    download = client.get(answer["download"])
    assert download.status_code == 200 and download.headers["content-type"] == "image/png"
    assert 'filename="wide-colorized.png"' in download.headers["content-disposition"]
    full = Image.open(io.BytesIO(download.content))
    expected = Colorizer.load().colorize(Image.open(io.BytesIO(data)))
    assert full.size == (PREVIEW_SIDE + 476, 60) and np.array_equal(np.asarray(full), np.asarray(expected))
    key = answer["download"].rsplit("/", 1)[1]
    assert len(key) == 32  # 24 random bytes
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), "..%2F..%2Fapp.py", "x" * 32):
        assert client.get(f"/api/result/{wrong}").status_code == 404, wrong


def test_the_result_store_is_bounded_in_count_bytes_and_age() -> None:
    from cae.apps.serve.store import ResultStore

    now = [0.0]
    store = ResultStore(max_count=2, max_bytes=10**9, max_seconds=100, clock=lambda: now[0])
    try:
        img = Image.new("RGB", (4, 4))
        a, b, c = (store.put(img, f"{n}.png") for n in "abc")
        assert store.get(a) is None and store.get(b) and store.get(c)  # the oldest went first
        assert sorted(p.name for p in store.folder.iterdir()) == sorted([f"{b}.png", f"{c}.png"])
        now[0] = 101
        assert store.get(b) is None and store.get(c) is None and not list(store.folder.iterdir())
        small = ResultStore(max_bytes=1)
        assert small.get(small.put(img, "x.png")) is None  # larger than the byte bound: not kept
        small.close()
    finally:
        store.close()
    assert not store.folder.exists()


def test_the_memory_budget_lets_a_job_wait_for_its_share() -> None:
    import threading

    from cae.apps.serve.store import MemoryBudget

    budget = MemoryBudget(100)
    entered = threading.Event()

    def second() -> None:
        with budget.reserve(60):
            entered.set()

    with budget.reserve(60):
        t = threading.Thread(target=second)
        t.start()
        assert not entered.wait(0.3)  # 60 + 60 > 100: the second job waits
    t.join(timeout=10)
    assert entered.is_set()


def test_a_photo_beyond_the_memory_budget_is_refused_with_413(runs_dir: Path) -> None:
    require(has_serve_extra(), "the serve extra is not installed")
    from starlette.testclient import TestClient

    from cae.apps.serve import jobs
    from cae.apps.serve.app import create_app

    budget = 50 * 50 * jobs.CHROMA_BYTES_PER_PIXEL
    with TestClient(create_app(runs_dir, memory_budget=budget), base_url=BASE_URL) as c:
        r = colorize(c, png(60, 60))
        assert r.status_code == 413 and "at most 2,500 pixels" in r.json()["error"], r.text
        assert colorize(c, png(50, 50)).status_code == 200


def test_posts_beyond_the_queue_are_answered_503_busy(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the job slots taken and no queue, a third POST is refused at once with 503 and
    Retry-After; the running ones finish, and then a POST is served again."""
    import threading

    require(has_serve_extra(), "the serve extra is not installed")
    from starlette.testclient import TestClient

    from cae.apps.serve import app as serve_app
    from cae.apps.serve import jobs

    release, started = threading.Event(), threading.Semaphore(0)
    real = jobs.colorize_answer

    def held(*args: object) -> dict:
        started.release()
        release.wait(60)
        return real(*args)

    with TestClient(serve_app.create_app(runs_dir, queue_length=0), base_url=BASE_URL) as c:
        monkeypatch.setattr(jobs, "colorize_answer", held)
        answers: list[int] = []
        runners = [threading.Thread(target=lambda: answers.append(colorize(c, png(8, 8)).status_code))
                   for _ in range(serve_app.HEAVY_JOBS)]
        for t in runners:
            t.start()
        for _ in runners:
            assert started.acquire(timeout=60)
        busy = colorize(c, png(8, 8))
        assert busy.status_code == 503 and "busy" in busy.json()["error"] and busy.headers["retry-after"]
        release.set()
        for t in runners:
            t.join(timeout=60)
        assert answers == [200] * serve_app.HEAVY_JOBS
        assert colorize(c, png(8, 8)).status_code == 200


def test_a_post_from_another_origin_is_refused(client) -> None:  # noqa: ANN001
    """A web page elsewhere cannot make the server work: its POST carries its own Origin (403);
    the page's own origin and requests without Origin (curl, scripts) are served."""
    for foreign in ("http://attacker.example", "null", "http://127.0.0.1:9999", "https://127.0.0.1",
                    "http://127.0.0.1.attacker.example", "http://localhost"):
        r = client.post("/api/colorize", data={"model": "shipped/colorizer"},
                        files={"file": ("a.png", png(8, 8), "image/png")}, headers={"origin": foreign})
        assert r.status_code == 403 and "another web site" in r.json()["error"], foreign
        assert "\n" not in r.json()["error"]
        r = client.post("/api/reconstruct", data={"model": "shipped/reference", "sample": "0"},
                        headers={"origin": foreign})
        assert r.status_code == 403, foreign
    assert colorize(client, png(8, 8)).status_code == 200  # no Origin
    same = client.post("/api/colorize", data={"model": "shipped/colorizer"},
                       files={"file": ("a.png", png(8, 8), "image/png")}, headers={"origin": BASE_URL})
    assert same.status_code == 200, same.text
    # a GET changes nothing: another origin may read the page (the browser keeps the answer from it)
    assert client.get("/api/models", headers={"origin": "http://attacker.example"}).status_code == 200


def test_a_model_that_cannot_load_names_no_server_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require(has_serve_extra(), "the serve extra is not installed")
    from starlette.testclient import TestClient

    from cae.apps.serve.app import create_app

    shutil.copytree(shipped_model_dir("colorizer"), tmp_path / "bad")
    (tmp_path / "bad" / "best.pt").write_bytes(b"not a checkpoint")
    with TestClient(create_app(tmp_path), base_url=BASE_URL) as c, caplog.at_level("WARNING", "cae.serve"):
        r = colorize(c, png(8, 8), model="runs/bad")
        message = r.json()["error"]
        assert r.status_code == 400 and "runs/bad cannot be loaded" in message, message
        assert str(tmp_path) not in message and "best.pt" not in message
        assert str(tmp_path) in caplog.text  # the full reason is in the server's log


def test_public_text_replaces_server_paths() -> None:
    from cae.apps.serve.jobs import public_text

    shown = public_text("cannot read /home/u/runs/a/best.pt (x); ~/.cache/cae and C:\\data\\x too; 1/2 of runs/ok")
    assert shown == "cannot read <server path> (x); <server path> and <server path> too; 1/2 of runs/ok"


def test_the_runs_index_is_parsed_once_and_refreshed_when_runs_change(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests read the index; at most every `min_interval` s one looks for changes (a walk, no
    parsing); only new or changed run folders are parsed again."""
    import time as time_module

    from cae.apps.serve import models

    walks, parsed = [], []
    real_walk, real_entry = models.finished_runs, models.model_entry
    monkeypatch.setattr(models, "finished_runs", lambda root: walks.append(root) or real_walk(root))
    monkeypatch.setattr(models, "model_entry", lambda d, *a: parsed.append(d.name) or real_entry(d, *a))
    shutil.copytree(shipped_model_dir("reference"), tmp_path / "a")
    now = [0.0]
    index = models.RunsIndex(tmp_path, min_interval=10, clock=lambda: now[0])
    parsed.clear()  # the shipped ones, parsed once at start
    ids = lambda: [e.id for e in index.models() if e.id.startswith("runs/")]  # noqa: E731
    assert ids() == ["runs/a"] and ids() == ["runs/a"] and index.find("runs/a", "reconstruct")
    assert (len(walks), parsed) == (1, ["a"])
    shutil.copytree(shipped_model_dir("reference"), tmp_path / "b")
    now[0] = 5
    assert ids() == ["runs/a"] and len(walks) == 1  # within the interval: the index as it was
    now[0] = 11
    assert ids() == ["runs/a", "runs/b"] and (len(walks), parsed) == (2, ["a", "b"])  # only b parsed
    config = tmp_path / "a" / "config.toml"
    config.write_text(config.read_text())
    os.utime(config, ns=(time_module.time_ns() + 10**9,) * 2)
    shutil.rmtree(tmp_path / "b")
    now[0] = 22
    assert ids() == ["runs/a"] and parsed == ["a", "b", "a"]  # the changed one parsed again


@pytest.fixture(scope="module")
def live_server(runs_dir: Path):  # noqa: ANN201 - a generator fixture
    """The app under uvicorn in a thread on a free loopback port: (host, port)."""
    require(has_serve_extra(), "the serve extra is not installed")
    from urllib.parse import urlsplit

    from cae.apps.serve.app import create_app, running

    with running(create_app(runs_dir)) as url:
        yield "127.0.0.1", urlsplit(url).port


def raw_get(host: str, port: int, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written: http.client sends it without normalizing dot segments."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": f"{host}:{port}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_raw_traversal_paths_reach_the_server_and_are_refused(live_server) -> None:  # noqa: ANN001
    """Dot segments and their encodings, sent raw, are answered by the server's own guards; a
    broken guard would hand out app.py (the server's code, one folder above static/)."""
    host, port = live_server
    status, body = raw_get(host, port, "/static/app.js")
    assert status == 200 and b"use strict" in body  # the control: the route serves its own files
    for path in ("/static/../app.py", "/static/../../serve/app.py", "/static/..%2fapp.py", "/static/%2e%2e/app.py",
                 "/static/%2e%2e%2fapp.py", "/static/%252e%252e/app.py", "/static/..%5capp.py",
                 "/static/%2E%2E/%2E%2E/serve/app.py", "/static//etc/passwd", "/report/..%2Fquick",
                 "/report/%2e%2e", "/api/result/..%2F..%2Fapp.py", "/static/../../x"):
        status, body = raw_get(host, port, path)
        assert status in (400, 404), (path, status)
        assert b"def create_app" not in body and b"root:" not in body, path


def test_cae_serve_on_ipv6_loopback() -> None:
    """`cae serve --host ::1`: the printed URL answers, and the page's own POST (its Origin
    http://[::1]:port) is served."""
    import http.client
    import subprocess
    import uuid

    require(has_serve_extra(), "the serve extra is not installed")
    proc = subprocess.Popen([sys.executable, "-m", "cae", "serve", "--host", "::1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()  # the first line says where: http://[::1]:PORT/
        assert line.startswith("cae serve: open http://[::1]:"), line + proc.stderr.read()
        port = int(line.split("]:", 1)[1].split("/", 1)[0])
        conn = http.client.HTTPConnection("::1", port, timeout=120)
        conn.request("GET", "/api/models")
        models = conn.getresponse()
        assert models.status == 200 and json.loads(models.read())["colorize"]
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nshipped/colorizer\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
                ).encode() + png(16, 16) + f"\r\n--{boundary}--\r\n".encode()
        conn.request("POST", "/api/colorize", body=body, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}", "Origin": f"http://[::1]:{port}"})
        answer = conn.getresponse()
        assert answer.status == 200, answer.read()
        assert json.loads(answer.read())["width"] == 16
        conn.close()
    finally:
        proc.terminate()  # a graceful stop; on a machine this busy it may take long: then kill
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


# ----------------------------------------------------------------------------- the model card panel
def test_the_card_of_a_shipped_model_is_its_model_card_md(client) -> None:  # noqa: ANN001
    from cae.core.runs import WEIGHTS
    from cae.report.card import CARD

    for name in ("colorizer", "reference"):
        answer = client.get("/api/card", params={"model": f"shipped/{name}"})
        assert answer.status_code == 200
        html = answer.json()["html"]
        assert f"<h1>Model card: {name}</h1>" in html and "<h2>Known failure modes</h2>" in html
        first_line = (WEIGHTS / name / CARD).read_text().splitlines()[6]  # the card's own words, rendered
        assert first_line[:40] in html
    run = client.get("/api/card", params={"model": "runs/ref"}).json()  # a run has no card, and says so
    assert run["html"] is None and "shipped models" in run["message"]
    for bad in ("shipped/../../etc", "", "shipped/nope"):
        answer = client.get("/api/card", params={"model": bad})
        assert answer.status_code == 400 and "pick one of the page's models" in answer.json()["error"]


# --- the Guide mode: a photo kept on the server, hints as JSON -------------------------------------

GUIDED = "shipped/guided"


def guide_photo(client, data: bytes, name: str = "photo.png"):  # noqa: ANN001, ANN201
    require(shipped_model_dir("guided").is_dir(), "no shipped guided colorizer in src/cae/weights/guided")
    return client.post("/api/guide/photo", data={"model": GUIDED}, files={"file": (name, data, "image/png")})


def test_the_guide_mode_lists_guided_models_apart(client) -> None:  # noqa: ANN001
    require(shipped_model_dir("guided").is_dir(), "no shipped guided colorizer in src/cae/weights/guided")
    answer = client.get("/api/models").json()
    assert [m["id"] for m in answer["guide"]] == [GUIDED]
    assert GUIDED not in [m["id"] for m in answer["colorize"]]
    r = client.post("/api/guide/photo", data={"model": "shipped/colorizer"}, files={"file": ("a.png", png(8, 8))})
    assert r.status_code == 400 and "unknown guide model" in r.json()["error"]  # not trained with hints


def test_a_guided_photo_is_kept_and_recoloured_by_hints(client) -> None:  # noqa: ANN001
    """Upload once, then each hints document gives a preview: the same hints the same bytes, a
    hint changes the image; the full-resolution render lands in the result store."""
    r = guide_photo(client, png(30, 50), "my photo.png")
    assert r.status_code == 200, r.text
    a = r.json()
    assert (a["width"], a["height"], a["preview_width"], a["preview_height"]) == (50, 30, 50, 30)
    assert a["hints"] == {"version": 1, "hints": []}
    doc = {"version": 1, "radius": 3, "hints": [{"x": 10, "y": 12.5, "color": "#FF0000"}]}
    one, two = (client.post(f"/api/guide/{a['id']}", json=doc).json() for _ in range(2))
    assert one["result"] == two["result"] != a["result"]
    assert one["hints"] == {"version": 1, "hints": [{"x": 10, "y": 12.5, "color": "#ff0000", "radius": 3}]}
    s = client.post(f"/api/guide/{a['id']}/suggest", json={"x": 20, "y": 5, "hints": doc["hints"]}).json()
    assert len(s["suggestions"]) == 5 and all(x["color"].startswith("#") for x in s["suggestions"])
    full = client.post(f"/api/guide/{a['id']}/render", json=doc).json()
    assert full["filename"] == "my_photo-guided.png"
    png_file = client.get(full["download"])
    assert png_file.status_code == 200 and Image.open(io.BytesIO(png_file.content)).size == (50, 30)


def test_guide_requests_are_refused_with_their_reason(client) -> None:  # noqa: ANN001
    """Foreign origin 403; a bad hint 400 naming the entry and field; an unknown photo 404; a
    body past the limit 413; a point outside the photo 400."""
    key = guide_photo(client, png(20, 40)).json()["id"]
    foreign = client.post(f"/api/guide/{key}", json={"version": 1, "hints": []}, headers={"Origin": "http://evil.test"})
    assert foreign.status_code == 403, foreign.text
    upload = client.post("/api/guide/photo", data={"model": GUIDED}, files={"file": ("a.png", png(8, 8))},
                         headers={"Origin": "http://evil.test"})
    assert upload.status_code == 403
    bad = {"version": 1, "hints": [{"x": 1, "y": 1, "color": "#00ff00"}, {"x": 1, "y": 1, "color": "red"}]}
    for route in (f"/api/guide/{key}", f"/api/guide/{key}/render"):
        r = client.post(route, json=bad)
        assert r.status_code == 400 and r.json()["error"] == 'hints[1].color must be a hex colour "#rrggbb", got "red"'
    outside = client.post(f"/api/guide/{key}", json={"version": 1, "hints": [{"x": 40, "y": 0, "color": "#000000"}]})
    assert outside.status_code == 400 and outside.json()["error"].startswith("hints[0].x = 40 is outside the photo")
    suggest = client.post(f"/api/guide/{key}/suggest", json={"x": -1, "y": 0})
    assert suggest.status_code == 400 and "x must be >= 0" in suggest.json()["error"]
    junk = client.post(f"/api/guide/{key}", content=b"{not json", headers={"Content-Type": "application/json"})
    assert junk.status_code == 400 and "not JSON" in junk.json()["error"]
    for unknown in ("A" * 32, "not-an-id"):
        r = client.post(f"/api/guide/{unknown}", json={"version": 1, "hints": []})
        assert r.status_code == 404 and "choose the photo again" in r.json()["error"], unknown
    huge = client.post(f"/api/guide/{key}", content=b" " * (2**20 + 1), headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and "larger than the limit" in huge.json()["error"]
    assert client.post(f"/api/guide/{key}", json={"version": 1, "hints": []}).status_code == 200  # still there


def test_an_oversize_guide_upload_is_413(runs_dir: Path) -> None:
    require(has_serve_extra(), "the serve extra is not installed")
    require(shipped_model_dir("guided").is_dir(), "no shipped guided colorizer in src/cae/weights/guided")
    from starlette.testclient import TestClient

    from cae.apps.serve.app import create_app

    with TestClient(create_app(runs_dir, max_bytes=20_000), base_url=BASE_URL) as c:
        r = guide_photo(c, png(120, 120))
        assert r.status_code == 413 and "larger than the limit" in r.json()["error"]


def test_the_guided_photos_are_bounded_least_recently_used_first() -> None:
    from cae.apps.serve.guide import GuidePhoto, PhotoStore, UnknownPhoto

    now = [0.0]
    store = PhotoStore(max_count=2, max_bytes=10**6, max_seconds=100, clock=lambda: now[0])

    def photo(nbytes: int = 10) -> GuidePhoto:
        return GuidePhoto(b"x" * nbytes, Image.new("RGB", (4, 4)), 4, 4, GUIDED, "p", 0.0)

    a, b = store.put(photo()), store.put(photo())
    store.get(a)  # a is now the more recently used
    c = store.put(photo())
    assert store.get(a) and store.get(c)
    with pytest.raises(UnknownPhoto):
        store.get(b)
    now[0] = 101
    with pytest.raises(UnknownPhoto):
        store.get(a)  # idle past the age bound
    big = store.put(photo(2 * 10**6))  # larger than the byte bound alone: kept, the others go
    assert store.get(big) and list(store.items) == [big]
