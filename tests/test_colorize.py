"""`cae colorize` on real-photo situations: odd sizes, image modes, tiles, bad files, shipped weights."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cae.core import runs
from cae.cli import main
from cae.core.photo import predict, read_image, total_stride
from cae.core.config import RunConfig, save_config
from cae.core.data import luma
from cae.core.tasks import Task
from cae.errors import CaeError
from conftest import require
from helpers import loaded_image


def _make_run(d: Path, arch: str, target: str) -> Path:
    """A colorize run folder with an untrained model (enough to exercise the plumbing)."""
    from cae.core.model import build_model

    cfg = RunConfig(task="colorize", target=target, arch=arch)
    cfg.data.normalize = "unit"  # these hand-made runs have no fitted statistics
    task = Task.from_config(cfg)
    torch.manual_seed(0)
    model = build_model(arch, task.in_channels, task.out_channels)
    d.mkdir(parents=True)
    save_config(cfg, d / runs.CONFIG)
    runs.save_torch(d / runs.BEST, model.state_dict())
    return d


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory) -> Path:
    return _make_run(tmp_path_factory.mktemp("m") / "unet", "unet4", "ycbcr")


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_odd_sizes_and_modes(tmp_path, unet_run):
    src = tmp_path / "in"
    src.mkdir()
    rgb = Image.fromarray(_photo(17, 33))
    rgb.save(src / "odd.png")
    rgb.save(src / "photo.jpg", quality=90)
    rgb.convert("L").save(src / "gray.png")
    rgb.convert("LA").save(src / "la.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))  # opacity varying across the image
    rgba.save(src / "rgba.png")
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(src / "pal.png")
    rgb.convert("CMYK").save(src / "cmyk.jpg")
    Image.fromarray((np.arange(17 * 33, dtype=np.uint16).reshape(17, 33) * 100)).save(src / "deep.png")
    Image.fromarray(_photo(1, 1)).save(src / "tiny.png")
    files = sorted(src.iterdir())
    out = tmp_path / "out"
    assert main(["colorize", *map(str, files), "--out", str(out), "--model", str(unet_run), "--compare",
                 "--device", "cpu"]) == 0
    for f in files:
        result = loaded_image(out / f"{f.stem}.png")
        want = loaded_image(f).size
        transparent = f.name in ("rgba.png", "la.png")  # a photo's transparency is kept, exactly
        assert result.size == want and result.mode == ("RGBA" if transparent else "RGB"), f.name
        if transparent:
            assert np.array_equal(np.asarray(result.getchannel("A")), np.asarray(loaded_image(f).getchannel("A")))
        assert (out / f"{f.stem}_original.png").is_file() and (out / f"{f.stem}_gray.png").is_file()
    # the output keeps the input's luma (chroma target): compare with the written gray image
    gray = np.asarray(loaded_image(out / "odd_gray.png"), dtype=np.float32)
    col = torch.from_numpy(np.asarray(loaded_image(out / "odd.png"), dtype=np.float32)).permute(2, 0, 1)
    assert np.abs(luma(col)[0].numpy() - gray).mean() < 3.0  # rounding and gamut clipping only


def test_sixteen_bit_gray_keeps_its_range(tmp_path):
    a = np.full((8, 8), 65535, dtype=np.uint16)
    a[:4] = 1000
    Image.fromarray(a).save(tmp_path / "d.png")
    img = read_image(tmp_path / "d.png")
    assert img.shape == (3, 8, 8)
    assert img.max().item() == pytest.approx(1.0) and img[:, :4].max().item() == pytest.approx(1000 / 65535, rel=1e-3)


@pytest.mark.parametrize(("mode", "values", "white"), [
    ("I", [0, 128, 255], 255.0),  # 8-bit values in 32-bit integers, as Pillow's convert("I") writes
    ("I", [0, 1000, 65535], 65535.0),  # 16-bit values in 32-bit integers
    ("F", [0.0, 0.25, 1.0], 1.0),  # floats in [0, 1]
    ("F", [0.0, 64.0, 255.0], 255.0),  # floats on the 8-bit scale
])
def test_deep_one_channel_images_keep_their_scale(tmp_path, mode, values, white):
    a = np.repeat(np.array(values, dtype=np.float32), 4).reshape(3, 4)
    Image.fromarray(a.astype(np.int32) if mode == "I" else a, mode).save(tmp_path / "d.tif")
    img = read_image(tmp_path / "d.tif")
    assert loaded_image(tmp_path / "d.tif").mode == mode
    assert torch.allclose(img, torch.from_numpy(a / white).expand(3, -1, -1), atol=1e-6)


def test_tiles_match_a_single_pass(unet_run):
    from cae.core.train import load_run

    model, cfg, task = load_run(unet_run, "cpu")
    rgb = torch.rand(3, 70, 90)
    whole = predict(model, task, rgb, total_stride(cfg.arch))
    tiled = predict(model, task, rgb, total_stride(cfg.arch), tile=32, overlap=16)
    assert tiled.shape == whole.shape == (3, 70, 90)
    # the margin is smaller than the U-Net's receptive field, and group norm normalizes each tile
    # by its own statistics, so tiles differ somewhat (at the default working size photos fit one tile)
    assert (tiled - whole).abs().mean().item() < 0.06


def test_chain_rgb_model_on_odd_size(tmp_path):
    run = _make_run(tmp_path / "ref", "reference", "rgb")
    assert total_stride("reference") == 4
    Image.fromarray(_photo(17, 33)).save(tmp_path / "x.png")
    assert main(["colorize", str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), "--model", str(run)]) == 0
    assert loaded_image(tmp_path / "o" / "x.png").size == (33, 17)


def test_bad_files_are_reported_and_the_rest_processed(tmp_path, unet_run, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(_photo(20, 20)).save(good)
    (tmp_path / "random.png").write_bytes(os.urandom(500))
    png = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(png[: len(png) // 2])
    Image.fromarray(_photo(64, 64)).save(tmp_path / "full.jpg", quality=95)
    jpg = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) // 3])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "x.png").mkdir()
    bad = ["random.png", "trunc.png", "cut.jpg", "empty.png", "x.png", "missing.png"]
    args = [str(tmp_path / n) for n in ("good.png", *bad)]
    code = main(["colorize", *args, "--out", str(tmp_path / "out"), "--model", str(unet_run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == len(bad)  # one line per bad file
    for name, line in zip(bad, err):
        assert name in line and line.startswith("cae: error:"), line
    assert (tmp_path / "out" / "good.png").is_file()


def test_no_photo_is_overwritten_by_an_output(tmp_path, unet_run, capsys):
    """An output named like an input (colorized into its own folder), or two inputs writing one
    file (same stem, or a stem ending in _gray under --compare): one line, exit 2, nothing written."""
    for name in ("photo.png", "a/x.png", "b/x.jpg", "x_gray.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(_photo(8, 8, seed=len(name))).save(tmp_path / name)
    before = {f: f.read_bytes() for f in tmp_path.rglob("*.*")}
    cases = [(["photo.png"], [], "would overwrite the input"),
             (["a/x.png", "b/x.jpg"], [], "would both be written to"),
             (["a/x.png", "x_gray.png"], ["--compare"], "would both be written to")]
    for names, extra, message in cases:
        out = tmp_path if names == ["photo.png"] else tmp_path / "out"
        code = main(["colorize", *(str(tmp_path / n) for n in names), "--out", str(out), "--model", str(unet_run), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], err
        assert not (tmp_path / "out").exists()
    assert {f: f.read_bytes() for f in tmp_path.rglob("*.*")} == before
    # the same file given twice is colorized once; without --compare, x_gray.png is no clash
    assert main(["colorize", str(tmp_path / "a/x.png"), str(tmp_path / "a/../a/x.png"), str(tmp_path / "x_gray.png"),
                 "--out", str(tmp_path / "out"), "--model", str(unet_run)]) == 0
    assert capsys.readouterr().out.count("x.png ->") == 1
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["x.png", "x_gray.png"]


def test_a_folder_stands_for_its_photos(tmp_path, unet_run, capsys):
    """`cae colorize DIR`: every photo in DIR (by suffix, sorted), nothing else; DIR as --out is
    refused before anything is written; a folder without photos is one bad input."""
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name in ("b.jpg", "a.PNG", "sub/c.png"):
        Image.fromarray(_photo(12, 20)).save(photos / name, format="PNG" if name.lower().endswith("png") else "JPEG")
    (photos / "notes.txt").write_text("not a photo")
    before = sorted(p.name for p in photos.iterdir())
    assert main(["colorize", str(photos), "--out", str(photos), "--model", str(unet_run)]) == 2
    assert "is the photo folder" in capsys.readouterr().err and sorted(p.name for p in photos.iterdir()) == before
    assert main(["colorize", str(photos / "sub" / ".."), str(photos / "sub" / "c.png"), "--out", str(tmp_path / "o"),
                 "--model", str(unet_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" -> ")[1].split()[0] for line in lines] == [str(tmp_path / "o" / n) for n in ("a.png", "b.png", "c.png")]
    (tmp_path / "empty").mkdir()  # reported as one bad input; the others go on
    assert main(["colorize", str(tmp_path / "empty"), str(photos / "sub"), "--out", str(tmp_path / "o2"),
                 "--model", str(unet_run)]) == 1
    assert capsys.readouterr().err.strip() == f"cae: error: {tmp_path / 'empty'}: is a folder without photos " \
        "(.png, .jpg, .jpeg, .tif, .tiff, .bmp, .webp, .gif)"
    assert [p.name for p in (tmp_path / "o2").iterdir()] == ["c.png"]


def test_unreadable_file_says_why(tmp_path, monkeypatch):
    from cae.core import photo

    (tmp_path / "locked.png").write_bytes(b"not empty")

    def denied(fp, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(fp))

    monkeypatch.setattr(photo.Image, "open", denied)  # as a file of another user's would (tests may run as root)
    with pytest.raises(CaeError, match=r"locked.png: not readable \(permission denied\)$"):
        read_image(tmp_path / "locked.png")


def test_not_a_colorizer_is_refused(tmp_path, capsys):
    d = tmp_path / "rec"
    d.mkdir()
    rec = RunConfig()
    rec.data.normalize = "unit"
    save_config(rec, d / runs.CONFIG)
    from cae.core.model import build_model

    runs.save_torch(d / runs.BEST, build_model("reference").state_dict())
    Image.fromarray(_photo(8, 8)).save(tmp_path / "a.png")
    assert main(["colorize", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model", str(d)]) == 2
    assert "not a colorizer" in capsys.readouterr().err


SHIPPED = Path(__file__).resolve().parents[1] / "src" / "cae" / "weights" / "colorizer" / "best.pt"


def test_default_model_is_the_shipped_colorizer(tmp_path):
    require(SHIPPED.is_file(), f"no shipped weights at {SHIPPED}")
    Image.fromarray(_photo(40, 50)).save(tmp_path / "p.jpg")
    assert main(["colorize", str(tmp_path / "p.jpg"), "--out", str(tmp_path / "o")]) == 0
    assert loaded_image(tmp_path / "o" / "p.png").size == (50, 40)


def test_python_api_colorizes_a_photo_as_the_command_does(tmp_path):
    """`cae.Colorizer`: the shipped colorizer by default; a file (turned by its camera rotation) or
    a Pillow image in, a Pillow image of the same size out, the luma kept, colour added, and the
    transparency of an RGBA image kept exactly; the same pixels as `cae colorize` writes."""
    import cae

    require(SHIPPED.is_file(), f"no shipped weights at {SHIPPED}")
    yy, xx = np.mgrid[0:48, 0:80]
    photo = np.stack([xx * 3, yy * 5, 255 - xx * 3], -1).astype(np.uint8)  # a colourful ramp
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to view
    Image.fromarray(photo).save(tmp_path / "p.jpg", exif=exif, quality=95)
    colorizer = cae.Colorizer.load(device="cpu")
    out = colorizer.colorize(tmp_path / "p.jpg")
    assert out.mode == "RGB" and out.size == (48, 80)  # turned as a viewer shows it
    rgb = torch.from_numpy(np.array(out)).permute(2, 0, 1).float() / 255
    given = read_image(tmp_path / "p.jpg")
    assert (luma(rgb[None]) - luma(given[None])).abs().max() < 3 / 255  # 8-bit rounding only
    assert (rgb - rgb.mean(0)).abs().mean() > 0.01  # not gray
    assert main(["colorize", str(tmp_path / "p.jpg"), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    with Image.open(tmp_path / "o" / "p.png") as written:
        assert np.array_equal(np.asarray(written), np.asarray(out))
    alpha = (np.arange(80 * 48) % 256).astype(np.uint8).reshape(48, 80)
    rgba = Image.fromarray(np.dstack([photo, alpha]), "RGBA")
    out = colorizer.colorize(rgba)
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], alpha)
    gray = luma(given[None])[0]
    assert torch.equal(colorizer(gray), colorizer(gray.expand(3, -1, -1)))  # a gray tensor is taken as it is
    for wrong in (given[None], given.permute(1, 2, 0), (given * 255).byte()):
        with pytest.raises(CaeError, match="one image as a float tensor"):
            colorizer(wrong)
    with pytest.raises(CaeError, match="no such file"):
        colorizer.colorize(tmp_path / "missing.png")
    with pytest.raises(CaeError, match="not a colorizer"):
        cae.Colorizer.load(Path(cae.__file__).parent / "weights" / "reference", device="cpu")


def test_python_api_colorizes_image_arrays(tmp_path):
    """An array as imaging libraries hold a photo gives the pixels its Pillow image gives: uint8
    RGB(A) or gray, floats in [0, 1], 16-bit gray at its own scale; other arrays get one line."""
    import cae

    require(SHIPPED.is_file(), f"no shipped weights at {SHIPPED}")
    colorizer = cae.Colorizer.load(device="cpu")
    yy, xx = np.mgrid[0:40, 0:60]
    photo = np.stack([xx * 4, yy * 6, 255 - xx * 4], -1).astype(np.uint8)
    want = np.asarray(colorizer.colorize(Image.fromarray(photo)))
    assert np.array_equal(np.asarray(colorizer.colorize(photo)), want)
    assert np.array_equal(np.asarray(colorizer.colorize(photo / 255.0)), want)
    gray = photo[..., 1]
    want_gray = np.asarray(colorizer.colorize(Image.fromarray(gray)))
    assert np.array_equal(np.asarray(colorizer.colorize(gray.astype(np.uint16) * 257)), want_gray)
    assert np.array_equal(np.asarray(colorizer.colorize(gray / np.float32(255))), want_gray)
    # floats a little beyond 1 are clipped, as a colour array's are, not read on the 8-bit scale
    over = (gray / np.float32(255)) * np.float32(1.2)
    assert np.array_equal(np.asarray(colorizer.colorize(over)), np.asarray(colorizer.colorize(np.minimum(over, 1))))
    rgba = np.dstack([photo, np.full(gray.shape, 7, np.uint8)])
    assert np.asarray(colorizer.colorize(rgba))[..., 3].tolist() == rgba[..., 3].tolist()
    for wrong, message in ((photo[None], "got shape"), (photo[..., :2], "got shape"),
                           (photo.astype(np.int64), "got int64")):
        with pytest.raises(CaeError, match=message):
            colorizer.colorize(wrong)
