"""Fuzzing with hypothesis: whatever the input, the answer is a result or a CaeError.

- the CIFAR-10 reader fed files of random bytes (any size, record-sized ones included);
- architecture specs generated from a token grammar: either `trace` refuses them with a
  CaeError, or `build_model` builds a model that maps (1, C, 32, 32) to the right shape;
- `cae colorize`: random and truncated image bytes through
  `read_image`, random image sizes through `predict`, and a subprocess fed the nasty files
  (zero bytes, truncated PNG/JPEG, 1x1, 1x100000, 16-bit PNG, CMYK JPEG, a folder named .png).

Each fuzz test prints how many examples it tried (`pytest -s` shows them).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cae.core.model import build_model
from cae.core.spec import trace
from cae.core.data import RECORD_BYTES, TEST_FILE, TRAIN_FILES, load_cifar10, read_batch_file
from cae.errors import CaeError
from helpers import loaded_image

def fuzz(n: int) -> settings:
    """n examples, no deadline (the machine is shared), no example database written into the repo."""
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


pytestmark = pytest.mark.usefixtures("one_thread")


class Counter:
    def __init__(self, name: str) -> None:
        self.name, self.counts = name, {}

    def add(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def report(self) -> str:
        line = f"fuzz {self.name}: {sum(self.counts.values())} examples ({', '.join(f'{k} {v}' for k, v in sorted(self.counts.items()))})"
        print(line)
        return line


# ----------------------------------------------------------------------------- the data reader
record_sized = st.integers(1, 4).flatmap(lambda k: st.binary(min_size=k * RECORD_BYTES, max_size=k * RECORD_BYTES))
any_bytes = st.one_of(st.binary(max_size=3 * RECORD_BYTES + 7), record_sized,
                      # valid records with labels nudged out of range now and then
                      st.lists(st.integers(0, 12), min_size=1, max_size=3).map(
                          lambda labels: b"".join(bytes([x]) + b"\x80" * (RECORD_BYTES - 1) for x in labels)))


def test_reader_random_bytes() -> None:
    counter = Counter("data reader")

    @fuzz(300)
    @given(payload=any_bytes)
    def check(payload: bytes) -> None:
        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "data_batch_1.bin"
            f.write_bytes(payload)
            try:
                images, labels = read_batch_file(f)
            except CaeError as e:
                assert "data_batch_1.bin" in str(e) and "\n" not in str(e)
                counter.add("refused")
                return
            assert images.shape == (len(payload) // RECORD_BYTES, 3, 32, 32) and labels.max() <= 9
            counter.add("loaded")

    check()
    assert counter.counts.get("loaded", 0) > 0 and counter.counts.get("refused", 0) > 0
    counter.report()


def test_loader_folder_with_one_random_file() -> None:
    counter = Counter("data folder")
    good = b"".join(bytes([i % 10]) + bytes(RECORD_BYTES - 1) for i in range(3))

    @fuzz(60)
    @given(payload=any_bytes, which=st.sampled_from((*TRAIN_FILES, TEST_FILE)))
    def check(payload: bytes, which: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            for name in (*TRAIN_FILES, TEST_FILE):
                (Path(d) / name).write_bytes(payload if name == which else good)
            try:
                data = load_cifar10(d)
            except CaeError as e:
                assert which in str(e)
                counter.add("refused")
                return
            assert data.images.shape[0] == data.labels.shape[0] == 15 + len(payload) // RECORD_BYTES
            counter.add("loaded")

    check()
    counter.report()


# ----------------------------------------------------------------------------- architectures
channels = st.one_of(st.integers(0, 70).map(str), st.just("out"))
conv_token = st.builds(
    lambda kind, c, k, s, p, rep, act: f"{kind}{c}{k}{s}{p}{rep}{act}",
    st.sampled_from(["conv", "tconv"]), channels,
    st.one_of(st.just(""), st.integers(0, 9).map(lambda k: f"k{k}")),
    st.one_of(st.just(""), st.integers(0, 3).map(lambda s: f"s{s}")),
    st.one_of(st.just(""), st.sampled_from(["p0", "p1", "p2", "p3", "p5", "pv", "pvalid", "psame"])),
    st.one_of(st.just(""), st.integers(0, 3).map(lambda r: f"x{r}")),
    st.one_of(st.just(""), st.sampled_from([":relu", ":sigmoid", ":tanh", ":lrelu", ":gelu", ":none", ":bogus"])))
pool_token = st.integers(0, 5).map(lambda n: f"pool{n}")
up_token = st.builds(lambda n, b: f"up{n}{'b' if b else ''}", st.integers(0, 4), st.booleans())
junk_token = st.text(alphabet="convtpuolkxs0123456789:|b", min_size=1, max_size=6)
token = st.one_of(conv_token, conv_token, conv_token, pool_token, pool_token, up_token, up_token, junk_token)


odd_conv = st.builds(lambda c, k, act: f"conv{c}{k}{act}", st.integers(1, 70),
                     st.sampled_from(["", "k1", "k3", "k5", "k4s2p1", "k3s2p1", "k2s2p0"]),
                     st.sampled_from(["", "", ":tanh", ":none", ":gelu"]))
enc_token = st.one_of(odd_conv, odd_conv, st.sampled_from(["pool2", "pool2", "pool4", "conv16x2"]))
dec_token = st.one_of(odd_conv, st.sampled_from(["up2", "up2", "up2b", "up4", "tconv12k2s2", "tconv8k4s2p1"]))


@st.composite
def plausible_specs(draw: st.DrawFn) -> str:
    """Specs a person might write: most are valid, many still fail to divide or to come back to 32x32."""
    enc = draw(st.lists(enc_token, min_size=1, max_size=5))
    dec = draw(st.lists(dec_token, min_size=0, max_size=5))
    last = draw(st.sampled_from(["convout", "convout:sigmoid", "tconvoutk2s2", "convoutk1", "conv3"]))
    return " ".join([*enc, "|", *dec, last])


@st.composite
def random_specs(draw: st.DrawFn) -> str:
    toks = draw(st.lists(token, min_size=0, max_size=9))
    bars = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
    for _ in range(bars):
        toks.insert(draw(st.integers(0, len(toks))), "|")
    return " ".join(toks)


def test_arch_specs_trace_or_build() -> None:
    counter = Counter("architecture specs")

    @fuzz(500)
    @given(spec=st.one_of(random_specs(), plausible_specs()), io_channels=st.sampled_from([(3, 3), (1, 2), (1, 3)]))
    def check(spec: str, io_channels: tuple[int, int]) -> None:
        c_in, c_out = io_channels
        try:
            info = trace(spec, (c_in, 32, 32), c_out)
        except CaeError as e:
            assert "\n" not in str(e)
            counter.add("refused")
            return
        model = build_model(spec, c_in, c_out)
        assert sum(p.numel() for p in model.parameters()) == info.params
        if max(r.size for r in info.trace) > 3_000_000:  # huge intermediate images: built, not run
            counter.add("built (too big to run)")
            return
        with torch.inference_mode():
            y = model(torch.rand(1, c_in, 32, 32))
        assert tuple(y.shape) == (1, c_out, 32, 32), (spec, tuple(y.shape))
        counter.add("built and ran")

    check()
    assert counter.counts.get("built and ran", 0) >= 10, counter.counts  # the grammar reaches valid specs
    counter.report()


# ----------------------------------------------------------------------------- colorize
def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(arr: np.ndarray, mode: str = "RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format="JPEG")
    return buf.getvalue()


def test_colorize_read_image_random_bytes() -> None:
    from cae.core.photo import read_image

    rng = np.random.default_rng(0)
    seeds = [_png(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)), _jpeg(rng.integers(0, 256, (16, 8, 3),
                                                                                        dtype=np.uint8))]
    counter = Counter("colorize read_image")

    @fuzz(200)
    @given(payload=st.one_of(st.binary(max_size=2000),
                             st.tuples(st.sampled_from(seeds), st.floats(0, 1)).map(lambda t: t[0][:int(len(t[0]) * t[1])]),
                             st.tuples(st.sampled_from(seeds), st.integers(0, 400), st.binary(min_size=1, max_size=8)).map(
                                 lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + len(t[2]):])))
    def check(payload: bytes) -> None:
        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "photo.png"
            f.write_bytes(payload)
            try:
                rgb = read_image(f)
            except CaeError as e:
                assert "photo.png" in str(e) and "\n" not in str(e)
                counter.add("refused")
                return
            assert rgb.ndim == 3 and rgb.shape[0] == 3 and float(rgb.min()) >= 0 and float(rgb.max()) <= 1
            counter.add("read")

    check()
    counter.report()


def test_colorize_predict_any_size() -> None:
    from cae.core.photo import predict, total_stride
    from cae.core.tasks import Task

    spec = "conv8 pool2 conv8 pool2 | up2 conv8 up2 convout"
    torch.manual_seed(0)
    model = build_model(spec, 1, 2).eval()
    task = Task("colorize", "lab")
    counter = Counter("colorize predict sizes")

    @fuzz(40)
    @given(h=st.integers(1, 70), w=st.integers(1, 70))
    def check(h: int, w: int) -> None:
        rgb = torch.rand(3, h, w)
        out = predict(model, task, rgb, total_stride(spec), tile=32, overlap=8)
        assert tuple(out.shape) == (3, h, w) and torch.isfinite(out).all()
        counter.add("ok")

    check()
    counter.report()


@pytest.mark.slow
def test_colorize_cli_nasty_files(tmp_path: Path) -> None:
    """Each nasty file is a result or one error line naming it; never a traceback, never a hang."""
    from PIL import Image

    from cae.core import runs
    from cae.core.config import RunConfig, save_config

    # a tiny untrained colorize "run" folder is enough to drive the command end to end
    model_dir = tmp_path / "model"
    cfg = RunConfig(task="colorize", target="lab", arch="conv8 pool2 | up2 convout")
    cfg.data.normalize = "unit"  # a hand-made run: no fitted statistics
    save_config(cfg, model_dir / runs.CONFIG)
    torch.manual_seed(0)
    runs.save_torch(model_dir / runs.BEST, build_model(cfg.arch, 1, 2).state_dict())

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    files = {
        "random.png": os.urandom(5000),
        "zero.jpg": b"",
        "truncated.png": _png(img)[:200],
        "cut.jpg": _jpeg(img)[:300],
        "one.png": _png(img[:1, :1]),
        "wide.png": _png(rng.integers(0, 256, (1, 100_000, 3), dtype=np.uint8)),
        "deep16.png": None,  # 16-bit gray
        "cmyk.jpg": _jpeg(img, "CMYK"),
        "gray.jpg": _jpeg(img, "L"),
    }
    src = tmp_path / "in"
    src.mkdir()
    for name, payload in files.items():
        if payload is not None:
            (src / name).write_bytes(payload)
    Image.fromarray((rng.integers(0, 65536, (20, 30))).astype(np.uint16)).save(src / "deep16.png")
    (src / "folder.png").mkdir()
    paths = [str(src / n) for n in files] + [str(src / "folder.png"), str(src / "missing.png")]
    r = subprocess.run([sys.executable, "-m", "cae", "colorize", *paths, "--model", str(model_dir), "--out",
                        str(tmp_path / "out"), "--device", "cpu"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("cae: error:")]
    bad = {"random.png", "zero.jpg", "truncated.png", "cut.jpg", "folder.png", "missing.png"}
    for name in bad:
        assert sum(name in line for line in errors) == 1, (name, r.stderr)
    for name in set(files) - bad:
        out = loaded_image(tmp_path / "out" / f"{Path(name).stem}.png")
        assert out.mode == "RGB" and out.size == loaded_image(src / name).size
    assert r.returncode == 1  # some files failed
