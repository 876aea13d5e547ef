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


def test_reconstruct_an_upload_through_the_reference(client) -> None:  # noqa: ANN001
    r = client.post("/api/reconstruct", data={"model": "shipped/reference"},
                    files={"file": ("wide.png", png(40, 90), "image/png")})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["latent"]["size"] == 1024 and answer["latent"]["shape"] == [16, 8, 8]
    assert answer["latent"]["formula"] == "16*((8-3+2*1)/1+1)^2 = 1,024"
    assert len(answer["channels"]) == 16 and image_of(answer["channels"][0]).size == (8, 8)
    assert image_of(answer["input"]).size == image_of(answer["output"]).size == (32, 32)
    assert answer["psnr"] > 5


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
    assert answer["psnr"] > 18  # the shipped reference reaches ~24 dB on average
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
