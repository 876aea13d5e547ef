"""CIFAR-10 binary reader, data-folder resolution, the seeded split, safe archive extraction.

Everything runs on small synthetic batch files in tmp folders except `test_real_cifar10`, which
reads the shared dataset (skipped, with the reason, when it is not there). Nothing touches the
network: `resolve_data_dir(download=False)` and `extract_archive` are tested directly.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cae.core import data
from cae.core.data import (FOLDER, RECORD_BYTES, TEST_FILE, TRAIN_FILES, channel_stats, class_balance, extract_archive,
                           load_cifar10, read_batch_file, resolve_data_dir, split_indices)
from cae.errors import CaeError
from conftest import require

REPO = Path(__file__).resolve().parents[1]


def write_cifar(folder: Path, per_file: int = 20, seed: int = 0) -> Path:
    """Six synthetic batch files in the official layout (label byte + 3072 pixel bytes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*TRAIN_FILES, TEST_FILE):
        labels = rng.permutation(np.arange(per_file) % 10).astype(np.uint8)
        pixels = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        np.concatenate([labels[:, None], pixels], axis=1).tofile(folder / name)
    return folder


def real_data_dir() -> Path | None:
    """The shared CIFAR-10 folder: $CAE_DATA_DIR, else ../shared/datasets next to the repo."""
    for cand in (os.environ.get("CAE_DATA_DIR"), REPO.parent / "shared" / "datasets"):
        if cand and Path(cand).is_dir():
            found = data._as_batches_folder(Path(cand))
            if found is not None and (found / TEST_FILE).is_file():
                return found
    return None


# ----------------------------------------------------------------------------- parsing
def test_pixel_order_is_planar_row_major(tmp_path: Path) -> None:
    """The first 1024 pixel bytes are the red plane, row by row; then green, then blue."""
    record = np.zeros(RECORD_BYTES, dtype=np.uint8)
    record[0] = 7
    red = np.arange(1024) % 251
    record[1:1025] = red
    record[1025:2049] = 100
    record[2049:] = 200
    f = tmp_path / "one.bin"
    record.tofile(f)
    images, labels = read_batch_file(f)
    assert images.shape == (1, 3, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == [7]
    assert images[0, 0, 0].tolist() == red[:32].tolist()  # first row of red
    assert images[0, 0, 1, 0] == red[32]  # second row starts at byte 32 of the plane
    assert images[0, 0, 31, 31] == red[1023]
    assert (images[0, 1] == 100).all() and (images[0, 2] == 200).all()


def test_load_pools_training_batches_then_test(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / FOLDER, per_file=20)
    d = load_cifar10(folder)
    assert tuple(d.images.shape) == (120, 3, 32, 32)
    assert d.labels.shape == (120,) and int(d.labels.min()) >= 0 and int(d.labels.max()) <= 9
    last_images, last_labels = read_batch_file(folder / TEST_FILE)
    assert (d.images[-20:].numpy() == last_images).all() and (d.labels[-20:].numpy() == last_labels).all()
    assert len(d.classes) == 10


def test_missing_file_is_named(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / FOLDER)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(CaeError, match="data_batch_3.bin is missing"):
        load_cifar10(folder)


@pytest.mark.parametrize("size", [1, RECORD_BYTES - 1, 2 * RECORD_BYTES + 5])
def test_truncated_file_is_refused(tmp_path: Path, size: int) -> None:
    f = tmp_path / "bad.bin"
    f.write_bytes(b"\x01" * size)
    with pytest.raises(CaeError, match=r"bad\.bin is truncated"):
        read_batch_file(f)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "empty.bin"
    f.write_bytes(b"")
    with pytest.raises(CaeError, match="empty.bin"):
        read_batch_file(f)


def test_label_outside_0_9_is_refused(tmp_path: Path) -> None:
    recs = np.zeros((3, RECORD_BYTES), dtype=np.uint8)
    recs[:, 0] = [1, 10, 2]
    f = tmp_path / "labels.bin"
    recs.tofile(f)
    with pytest.raises(CaeError, match=r"record 1 has label 10 outside 0-9"):
        read_batch_file(f)


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaeError, match="holds no CIFAR-10 batch files"):
        load_cifar10(tmp_path / "empty")


def test_folder_not_existing_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAE_DATA_DIR", raising=False)
    with pytest.raises(CaeError, match=r"does not exist.*--data"):
        resolve_data_dir(tmp_path / "nowhere")
    monkeypatch.setenv("CAE_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(CaeError, match="CAE_DATA_DIR"):
        resolve_data_dir(None)


# ----------------------------------------------------------------------------- resolution order
def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write_cifar(tmp_path / "explicit" / FOLDER)
    env = write_cifar(tmp_path / "env" / FOLDER)
    cache = write_cifar(tmp_path / "xdg" / "cae" / FOLDER)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CAE_DATA_DIR", str(env.parent))  # the folder holding cifar-10-batches-bin/
    assert resolve_data_dir(explicit.parent) == explicit  # explicit beats the environment
    assert resolve_data_dir(explicit) == explicit  # ... given as the batches folder itself
    assert resolve_data_dir(None) == env
    monkeypatch.setenv("CAE_DATA_DIR", str(env))
    assert resolve_data_dir(None) == env
    monkeypatch.delenv("CAE_DATA_DIR")
    assert resolve_data_dir(None, download=False) == cache


def test_no_data_anywhere_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(CaeError, match="no CIFAR-10 data found"):
        resolve_data_dir(None, download=False)


# ----------------------------------------------------------------------------- the split
@pytest.fixture(scope="module")
def labels60k() -> np.ndarray:
    return np.random.default_rng(123).permutation(np.repeat(np.arange(10), 6000))


def test_split_sizes_disjoint_covering(labels60k: np.ndarray) -> None:
    s = split_indices(labels60k, seed=0)
    assert [len(s[k]) for k in ("train", "val", "test")] == [48000, 6000, 6000]
    joined = np.concatenate([s["train"], s["val"], s["test"]])
    assert len(np.unique(joined)) == 60000 and joined.min() == 0 and joined.max() == 59999


def test_split_is_class_balanced(labels60k: np.ndarray) -> None:
    for name, fracs in class_balance(labels60k, split_indices(labels60k, seed=3)).items():
        assert all(abs(f - 0.1) <= 0.002 for f in fracs), (name, fracs)  # within 2% of 1/10


def test_split_is_seeded(labels60k: np.ndarray) -> None:
    a, b, c = (split_indices(labels60k, seed=s) for s in (0, 0, 1))
    assert all((a[k] == b[k]).all() for k in a)
    assert not (a["test"] == c["test"]).all()
    assert set(a["test"].tolist()) != set(c["test"].tolist())


def test_split_interleaves_classes(labels60k: np.ndarray) -> None:
    s = split_indices(labels60k, seed=0)
    first = labels60k[s["train"][:64]]
    assert len(np.unique(first)) >= 5  # a batch is never one class


def test_split_limit(labels60k: np.ndarray) -> None:
    full = split_indices(labels60k, seed=0)
    s = split_indices(labels60k, seed=0, limit=600)
    assert [len(s[k]) for k in ("train", "val", "test")] == [480, 60, 60]
    joined = np.concatenate(list(s.values()))
    assert len(np.unique(joined)) == 600
    assert set(s["test"].tolist()) <= set(full["test"].tolist())  # a subset of the full test split
    for fracs in class_balance(labels60k, s).values():
        assert all(abs(f - 0.1) <= 0.002 for f in fracs)


# ----------------------------------------------------------------------------- download (offline)
def _tar_gz(path: Path, members: dict[str, bytes], symlink: tuple[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        if symlink:
            info = tarfile.TarInfo(symlink[0])
            info.type, info.linkname = tarfile.SYMTYPE, symlink[1]
            tar.addfile(info)
    return path


@pytest.mark.parametrize("name", ["../evil.txt", "cifar-10-batches-bin/../../evil.txt", "/tmp/cae_evil_abs.txt"])
def test_extract_refuses_path_traversal(tmp_path: Path, name: str) -> None:
    archive = _tar_gz(tmp_path / "bad.tar.gz", {"cifar-10-batches-bin/ok.bin": b"x", name: b"evil"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(CaeError, match="unsafe member"):
        extract_archive(archive, dest)
    assert not (tmp_path / "evil.txt").exists() and not list(dest.rglob("*"))  # nothing extracted at all


def test_extract_refuses_symlink(tmp_path: Path) -> None:
    archive = _tar_gz(tmp_path / "link.tar.gz", {}, symlink=("cifar-10-batches-bin/x", "/etc/passwd"))
    with pytest.raises(CaeError, match="unsafe member"):
        extract_archive(archive, tmp_path)


def test_extract_good_archive(tmp_path: Path) -> None:
    src = write_cifar(tmp_path / "src" / FOLDER, per_file=10)
    archive = _tar_gz(tmp_path / "good.tar.gz", {f"{FOLDER}/{f.name}": f.read_bytes() for f in src.iterdir()})
    dest = tmp_path / "dest"
    dest.mkdir()
    extract_archive(archive, dest)
    assert load_cifar10(dest).images.shape[0] == 60


def test_extraction_never_shows_a_partial_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the members are written, the cache has no cifar-10-batches-bin/ a reader could take for
    the data; it appears whole, by one rename, and nothing else is left behind."""
    src = write_cifar(tmp_path / "src" / FOLDER, per_file=10)
    archive = _tar_gz(tmp_path / "good.tar.gz", {f"{FOLDER}/{f.name}": f.read_bytes() for f in src.iterdir()})
    dest = tmp_path / "cache"
    dest.mkdir()
    seen = []
    extractall = tarfile.TarFile.extractall

    def watched(self, path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        extractall(self, path, *args, **kwargs)
        seen.append((dest / FOLDER).exists())  # every member written: is it visible yet?

    monkeypatch.setattr(tarfile.TarFile, "extractall", watched)
    extract_archive(archive, dest)
    assert seen == [False]
    assert load_cifar10(dest).images.shape[0] == 60 and sorted(p.name for p in dest.iterdir()) == [FOLDER]


FAKE_DOWNLOAD = """
import shutil
import sys
from pathlib import Path

import pooch

from cae.core.data import download_cifar10

archive, dest, log = map(Path, sys.argv[1:])


def retrieve(url, known_hash, path, fname, progressbar):  # the network, replaced by a local copy
    with open(log, "a") as f:
        f.write("download\\n")
    shutil.copyfile(archive, Path(path) / fname)
    return str(Path(path) / fname)


pooch.retrieve = retrieve
print(download_cifar10(dest))
"""


def test_two_processes_filling_an_empty_cache_make_one_copy(tmp_path: Path) -> None:
    """Two commands (or torchrun's ranks) start on an empty cache at once: one downloads and
    extracts, the other waits for it and finds the finished copy."""
    import subprocess
    import sys

    src = write_cifar(tmp_path / "src" / FOLDER, per_file=200)
    archive = _tar_gz(tmp_path / "archive.tar.gz", {f"{FOLDER}/{f.name}": f.read_bytes() for f in src.iterdir()})
    (tmp_path / "fake.py").write_text(FAKE_DOWNLOAD)
    dest, log = tmp_path / "cache", tmp_path / "downloads.log"
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "fake.py"), str(archive), str(dest), str(log)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o.strip() for o, _ in outs] == [str(dest / FOLDER)] * 2
    assert log.read_text() == "download\n"  # the second found the first's copy
    assert load_cifar10(dest).images.shape[0] == 1200
    assert not [p.name for p in dest.iterdir() if p.name.startswith(data.EXTRACTING)]


def test_requires_python_admits_no_version_without_the_extraction_filter() -> None:
    """`extract_archive` passes filter="data" to tarfile, which Python 3.11 has from 3.11.4 on."""
    import re
    import tomllib

    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    m = re.fullmatch(r">=\s*(\d+)\.(\d+)(?:\.(\d+))?", spec.strip())
    assert m, f"requires-python {spec!r}: expected a lower bound '>=X.Y.Z'"
    assert (int(m[1]), int(m[2]), int(m[3] or 0)) >= (3, 11, 4), spec
    assert hasattr(tarfile, "data_filter")  # and the interpreter running the tests has it


def test_a_failed_download_is_one_short_line_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pooch

    from cae.core.data import download_cifar10

    def offline(*args, **kwargs):  # what requests raises without a network: ~400 characters
        raise ConnectionError("HTTPSConnectionPool(host='www.cs.toronto.edu', port=443): Max retries exceeded " * 5)

    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(CaeError) as e:
        download_cifar10(tmp_path)
    message = str(e.value)
    assert "\n" not in message and len(message) < 320, message
    assert "ConnectionError" in message and "pass its folder with --data or CAE_DATA_DIR" in message


# ----------------------------------------------------------------------------- the real files
@pytest.mark.slow
def test_real_cifar10() -> None:
    folder = real_data_dir()
    require(folder is not None,
            "real CIFAR-10 not found: set CAE_DATA_DIR or place it at ../shared/datasets next to the repo")
    d = load_cifar10(folder)
    assert tuple(d.images.shape) == (60000, 3, 32, 32)
    assert int(d.labels.min()) == 0 and int(d.labels.max()) == 9
    assert np.bincount(d.labels.numpy(), minlength=10).tolist() == [6000] * 10
    assert d.classes[0] == "airplane" and d.classes[9] == "truck"


def test_channel_stats_are_the_exact_mean_and_std() -> None:
    """The histogram route gives the float64 mean and unbiased std of the images in [0, 1]."""
    import torch

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 8, 8), generator=g, dtype=torch.uint8)
    images[:, 2] //= 4  # channels with different statistics
    mean, std = channel_stats(images)
    x = images.double() / 255
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), rel=1e-12)
    assert std == pytest.approx(x.std(dim=(0, 2, 3)).tolist(), rel=1e-12)
