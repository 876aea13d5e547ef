"""`cae export RUN --onnx FILE`: the ONNX graph, run by onnxruntime, computes what PyTorch does.

The PyTorch side is computed here from the core's own functions (the task's input, the model,
the merge), not from the module that is exported, so a graph that lost the normalization, the
decoding or the merge fails."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from cae.apps.export import export_onnx, onnx_colorizer
from cae.cli import main
from cae.core import runs
from cae.core.color import merge_chroma
from cae.core.config import RunConfig, save_config
from cae.core.data import luma
from cae.core.model import build_model
from cae.core.photo import Colorizer, decode_for_photos, predict, total_stride
from cae.core.tasks import Task
from cae.core.train import load_run, run_images
from conftest import require

RGB_MSE = 1e-5  # the bound on a reconstruction's (or a colorized image's) MSE, onnxruntime vs PyTorch
CHROMA_MAX = 1e-4  # the largest difference of one chroma value allowed (values span about [0, 1])
BATCH = 500


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the `one_thread` fixture for torch: the machine may be busy
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _reference(name: str, boost: float | None = None):  # noqa: ANN202
    """(model, cfg, task) of a shipped model or run folder, decoded as the export decodes it."""
    model, cfg, task = load_run(runs.shipped_run(name) if isinstance(name, str) else name, "cpu")
    if task.kind == "colorize":
        decode_for_photos(model, cfg.color, boost)
    return model, cfg, task


@torch.inference_mode()
def _torch_outputs(model, task, rgb: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """What the graph must give for RGB images in [0, 1], by the core's functions."""
    out = model(task.network_input(rgb))
    if task.target == "rgb":
        return {"rgb": out.clamp(0, 1)}
    return {"rgb": merge_chroma(luma(rgb), out, task.target).clamp(0, 1), "chroma": out}


def _graph_input(task, rgb: torch.Tensor) -> np.ndarray:  # noqa: ANN001
    return (rgb if task.kind == "reconstruct" else luma(rgb)).numpy()


def _compare(session: ort.InferenceSession, model, task, rgb: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
    """The worst batch's rgb MSE and largest chroma difference, onnxruntime against PyTorch."""
    names = [o.name for o in session.get_outputs()]
    worst = {"rgb_mse": 0.0, "chroma_max": 0.0}
    for i in range(0, len(rgb), BATCH):
        x = rgb[i:i + BATCH]
        want = _torch_outputs(model, task, x)
        got = dict(zip(names, session.run(None, {"image": _graph_input(task, x)})))
        assert set(got) == set(want)
        assert got["rgb"].shape == tuple(want["rgb"].shape)
        worst["rgb_mse"] = max(worst["rgb_mse"], float(((torch.from_numpy(got["rgb"]) - want["rgb"]) ** 2).mean()))
        if "chroma" in want:
            diff = (torch.from_numpy(got["chroma"]) - want["chroma"]).abs().max()
            worst["chroma_max"] = max(worst["chroma_max"], float(diff))
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("name", ["reference", "colorizer"])
def test_shipped_model_matches_pytorch_on_the_test_images(name: str, tmp_path: Path, one_thread: None) -> None:
    """Each shipped model, exported by its name, on the 6,000 images of its config's test split."""
    data = os.environ.get("CAE_DATA_DIR")
    require(bool(data) and Path(data).is_dir(), "CAE_DATA_DIR is not set to the CIFAR-10 binary folder")
    path = tmp_path / f"{name}.onnx"
    assert main(["export", name, "--onnx", str(path)]) == 0
    model, cfg, task = _reference(name)
    rgb = torch.div(run_images(runs.shipped_run(name), cfg, part="test"), 255)
    assert len(rgb) == 6000
    worst = _compare(_session(path), model, task, rgb)
    print(f"\n{name}: worst batch rgb MSE {worst['rgb_mse']:.3g}, largest chroma difference {worst['chroma_max']:.3g}")
    assert worst["rgb_mse"] <= RGB_MSE
    assert worst["chroma_max"] <= CHROMA_MAX


def _photo_like(h: int, w: int, n: int = 1, seed: int = 0) -> torch.Tensor:
    """Smooth random RGB images (N,3,H,W) in [0, 1]: coarse noise upsampled, as photos vary."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(2, h // 6), max(2, w // 6), generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def colorizer_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx("colorizer", tmp_path_factory.mktemp("onnx") / "colorizer.onnx")


@pytest.mark.parametrize("size", [(37, 53), (48, 80), (8, 8)])
def test_colorizer_graph_is_cae_colorize_at_any_size(colorizer_onnx: Path, size: tuple[int, int]) -> None:
    """At sizes that are not 32 (and not multiples of its stride of 8), the graph colorizes as
    `cae colorize` does at native scale: padded, predicted, cropped, merged with the luma."""
    model, cfg, task = _reference("colorizer")
    rgb = _photo_like(*size)
    want = predict(model, task, rgb[0], total_stride(cfg.arch), working_size=0)
    rgb_out, chroma = _session(colorizer_onnx).run(None, {"image": luma(rgb).numpy()})
    assert rgb_out.shape == (1, 3, *size) and chroma.shape == (1, 2, *size)
    assert float(((torch.from_numpy(rgb_out[0]) - want) ** 2).mean()) <= RGB_MSE


def test_reconstruction_graph_takes_any_size(tmp_path: Path) -> None:
    """The reference (stride 4) at a multiple of 4 that is not 32 is the model itself; at other
    sizes, the model on the image reflected out to a multiple of 4, cropped back."""
    session = _session(export_onnx("reference", tmp_path / "reference.onnx"))
    model, _, task = _reference("reference")
    for h, w in ((44, 64), (37, 54)):
        rgb = _photo_like(h, w, n=2)
        padded = F.pad(rgb, (0, -w % 4, 0, -h % 4), mode="reflect")
        with torch.inference_mode():
            want = model(task.network_input(padded))[:, :, :h, :w].clamp(0, 1)
        (got,) = session.run(None, {"image": rgb.numpy()})
        assert got.shape == (2, 3, h, w)
        assert float(((torch.from_numpy(got) - want) ** 2).mean()) <= RGB_MSE


def test_graph_records_its_contract(colorizer_onnx: Path) -> None:
    """Names, channels, free batch/height/width axes and the metadata a user needs beside it."""
    proto = onnx.load(str(colorizer_onnx))
    (inp,) = proto.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "image" and dims == ["batch", 1, "height", "width"]
    assert [o.name for o in proto.graph.output] == ["rgb", "chroma"]
    meta = {p.key: p.value for p in proto.metadata_props}
    _, cfg, _ = _reference("colorizer")
    assert meta["cae.working_size"] == str(cfg.color.working_size)
    assert float(meta["cae.boost"]) == cfg.color.photo_boost


def test_boost_is_fixed_in_the_graph(tmp_path: Path) -> None:
    """--boost changes the graph's decoding as it changes PyTorch's; a reconstruction has none."""
    path = tmp_path / "c.onnx"
    assert main(["export", "colorizer", "--onnx", str(path), "--boost", "1.5"]) == 0
    model, _, task = _reference("colorizer", boost=1.5)
    rgb = _photo_like(32, 32, n=4)
    worst = _compare(_session(path), model, task, rgb)
    assert worst["chroma_max"] <= CHROMA_MAX
    default_model, _, _ = _reference("colorizer")
    assert not torch.allclose(_torch_outputs(default_model, task, rgb)["chroma"], _torch_outputs(model, task, rgb)["chroma"],
                              atol=10 * CHROMA_MAX)
    with pytest.raises(Exception, match="applies to a classifier colorizer"):
        export_onnx("reference", tmp_path / "r.onnx", boost=1.0)


def _hand_made_run(d: Path, arch: str, target: str, task: str = "colorize") -> Path:
    """A run folder with an untrained model (enough to exercise the export)."""
    cfg = RunConfig(task=task, target=target, arch=arch)
    cfg.data.normalize = "unit"
    t = Task.from_config(cfg)
    torch.manual_seed(0)
    d.mkdir(parents=True)
    save_config(cfg, d / runs.CONFIG)
    runs.save_torch(d / runs.BEST, build_model(arch, t.in_channels, t.out_channels).state_dict())
    return d


@pytest.mark.parametrize("target", ["lab", "rgb"])
def test_other_colorizer_targets_export(tmp_path: Path, target: str) -> None:
    """A Lab colorizer's graph merges by the L* search; an RGB colorizer gives RGB only."""
    run = _hand_made_run(tmp_path / "run", "unet4", target)
    session = _session(export_onnx(run, tmp_path / "m.onnx"))
    model, _, task = _reference(run)
    assert _compare(session, model, task, _photo_like(24, 40, n=2))["chroma_max"] <= CHROMA_MAX
    assert [o.name for o in session.get_outputs()] == (["rgb"] if target == "rgb" else ["rgb", "chroma"])


def test_onnx_colorizer_colorizes_as_pytorch() -> None:
    """The onnxruntime Colorizer (the benchmark's) gives `cae colorize`'s image, working scale included."""
    rgb = _photo_like(300, 470)[0]
    want = Colorizer.load(device="cpu")(rgb)
    got = onnx_colorizer(threads=1)(rgb)
    assert got.shape == want.shape == rgb.shape
    assert float(((got - want) ** 2).mean()) <= RGB_MSE


def test_a_guided_colorizer_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "guided", "--onnx", str(tmp_path / "g.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "guided colorizer" in err and "'colorizer'" in err
    assert not (tmp_path / "g.onnx").exists()


def test_unknown_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "no-such-model", "--onnx", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither a run folder nor a shipped model (colorizer, guided, reference)" in err
    assert not (tmp_path / "x.onnx").exists()


def test_missing_onnx_extra_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` fails as when it is not installed
    assert main(["export", "reference", "--onnx", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'cae[onnx]'" in err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(Exception, match=r"cae\[onnx\]"):
        onnx_colorizer()


def test_usage_working_scale_snippet_colorizes_as_cae_colorize(colorizer_onnx: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/usage.md's numpy + Pillow reference of the working scale, run as written on a photo
    larger than the working size, gives `cae colorize`'s image (up to the resamplers' rounding)."""
    from PIL import Image

    text = (Path(__file__).resolve().parents[1] / "docs" / "usage.md").read_text()
    snippet = text.split("## ONNX export", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    rgb = _photo_like(120, 200)[0]
    Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "photo.jpg",
                                                                                       quality=95)
    (tmp_path / "colorizer.onnx").write_bytes(colorizer_onnx.read_bytes())
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "usage.md", "exec"), {})
    got = np.asarray(Image.open("photo-color.png"), np.float32) / 255
    want = np.asarray(Colorizer.load(device="cpu").colorize("photo.jpg"), np.float32) / 255
    assert got.shape == want.shape
    assert float(((got - want) ** 2).mean()) < 1e-4  # ~1/255 rounding; a missing merge or wrong chroma is ~1e-2


def test_dense_model_takes_its_training_size_only(tmp_path: Path) -> None:
    """A model with an fc layer is exported for 32 x 32 (its batch axis stays free) and matches PyTorch."""
    run = _hand_made_run(tmp_path / "run", "conv4 pool2 fc16:none | fc4s16 up2 convout", "rgb", task="reconstruct")
    path = export_onnx(run, tmp_path / "m.onnx")
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 32, 32]
    model, _, task = _reference(run)
    assert _compare(_session(path), model, task, _photo_like(32, 32, n=3))["rgb_mse"] <= RGB_MSE
