"""A trained model as an ONNX graph (`cae export RUN --onnx FILE`, `cae.export_onnx`), for
onnxruntime or any other ONNX runtime, without cae or torch.

The graph takes images as a user holds them and gives images back; everything cae does around
the network is inside it:
  input  `image`: float32 (N, C, H, W) in [0, 1]: RGB (C = 3) for a reconstruction model, the
         BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B (C = 1) for a colorizer;
  output `rgb`:    float32 (N, 3, H, W) in [0, 1] (clamped): the reconstruction, or the
         colorized image (the chroma merged with the given Y);
  output `chroma`: float32 (N, 2, H, W): a chroma colorizer's (Cb, Cr) (or a*/256 + 0.5,
         b*/256 + 0.5 in 'lab'), 0.5-centred; decoded, as `cae colorize` decodes it.
The normalization of the run (`normalization.json`) and a classifier's decoding (the annealed
mean over its chroma bins, with its temperature and boost) are constants of the graph. A fully
convolutional model takes any H and W: the graph pads the image (reflected) to a multiple of the
net's total stride, as `cae colorize` does, and crops the result back. A model with a dense
(`fc`) layer takes the 32 x 32 of its training only.

The graph does not include `cae colorize`'s working scale (the chroma predicted on a copy whose
short side is `working_size` pixels, upsampled and merged with the full-size luma); that size is
recorded in the graph's metadata (`cae.working_size`), and docs/usage.md shows the few lines.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cae.core import runs
from cae.core.color import merge_chroma
from cae.core.photo import Colorizer, decode_for_photos, total_stride
from cae.core.train import load_run
from cae.errors import CaeError

OPSET = 17  # onnxruntime >= 1.14 runs it; the TorchScript exporter writes it without onnxscript
INPUT = "image"
AXES = {0: "batch", 2: "height", 3: "width"}
EXTRA = "ONNX export needs the onnx extra: pip install 'cae[onnx]'"


class OnnxGraph(nn.Module):
    """What the exported graph computes (see the module's docstring): `forward(image)` ->
    (rgb,) or (rgb, chroma)."""

    def __init__(self, model: nn.Module, cfg, task, stride: int, any_size: bool) -> None:  # noqa: ANN001
        super().__init__()
        self.model, self.cfg, self.task, self.stride, self.any_size = model.eval(), cfg, task, stride, any_size

    @property
    def output_names(self) -> list[str]:
        return ["rgb", "chroma"] if self.task.kind == "colorize" and self.task.target != "rgb" else ["rgb"]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, w = image.shape[-2], image.shape[-1]
        x = image
        if self.any_size:  # to a multiple of the stride, as `cae colorize` pads (bottom and right, reflected)
            x = F.pad(x, (0, (self.stride - w % self.stride) % self.stride, 0, (self.stride - h % self.stride)
                          % self.stride), mode="reflect")
        # a colorizer sees the luma of its RGB input: gray RGB, whose luma is Y, as `cae colorize` gives it
        rgb_in = x if self.task.kind == "reconstruct" else x.expand(-1, 3, -1, -1)
        out = self.model(self.task.network_input(rgb_in))[:, :, :h, :w]
        if self.task.target == "rgb":
            return (out.clamp(0, 1),)
        return merge_chroma(image, out, self.task.target).clamp(0, 1), out


def resolve_run(run: str | Path) -> Path:
    """The run folder `run` names: a folder (a `cae train --out`), else a shipped model's name."""
    path = Path(run)
    if path.is_dir():
        return path
    if path.name == str(run) and (runs.WEIGHTS / str(run) / runs.BEST).is_file():
        return runs.shipped_run(str(run))
    have = sorted(p.name for p in runs.WEIGHTS.iterdir() if (p / runs.BEST).is_file())
    raise CaeError(f"{run} is neither a run folder nor a shipped model ({', '.join(have)}); "
                   "give the --out folder of a cae train run or a shipped model's name")


def export_graph(run: str | Path, boost: float | None = None) -> tuple[OnnxGraph, dict[str, str]]:
    """The graph module of a run (a folder or a shipped model's name) and the metadata recorded
    with it. A colorizer decodes as `cae colorize` does (its `color.photo_boost`, or `boost`)."""
    model, cfg, task = load_run(resolve_run(run), "cpu")
    if task.hints:
        raise CaeError(f"{run} is a guided colorizer, whose hints the ONNX graph has no input for; export the "
                       "automatic colorizer ('colorizer') or another run trained without color.hints")
    meta = {"cae.task": task.kind, "cae.target": task.target, "cae.arch": cfg.arch}
    if task.kind == "colorize":
        decode_for_photos(model, cfg.color, boost)
        meta["cae.working_size"] = str(cfg.color.working_size)
        if hasattr(model, "boost"):
            meta["cae.boost"] = f"{model.boost.item():g}"
    elif boost is not None:
        raise CaeError(f"--boost applies to a classifier colorizer; {run} is a {task.kind} run")
    any_size = not any(isinstance(m, nn.Linear) for m in model.modules())
    stride = total_stride(cfg.arch) if any_size else 1
    meta["cae.size"] = f"any (padded to a multiple of {stride})" if any_size else "32x32"
    return OnnxGraph(model, cfg, task, stride, any_size), meta


def onnx_bytes(run: str | Path, boost: float | None = None) -> bytes:
    """The ONNX file of a run (a folder or a shipped model's name), as bytes (`export_onnx`)."""
    return graph_bytes(*export_graph(run, boost))


def graph_bytes(graph: OnnxGraph, meta: dict[str, str]) -> bytes:
    """`graph` as the bytes of an ONNX file, `meta` in its metadata."""
    try:
        import onnx
    except ModuleNotFoundError:
        raise CaeError(EXTRA) from None
    example = torch.rand(1, graph.task.in_channels, 32, 32)
    axes = AXES if graph.any_size else {0: "batch"}
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's warnings are about the buffers read as constants: meant so
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (example,), buf, dynamo=False, opset_version=OPSET, input_names=[INPUT],
                          output_names=graph.output_names,
                          dynamic_axes={name: axes for name in [INPUT, *graph.output_names]})
    proto = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = f"cae {meta['cae.task']} model: image in [0, 1] -> {', '.join(graph.output_names)}"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(run: str | Path, path: str | Path, boost: float | None = None) -> Path:
    """Write the ONNX graph of a run (a folder or a shipped model's name) to `path`, atomically;
    the graph's contract is in this module's docstring. `boost`: a classifier colorizer's
    decoding-time rebalancing (default: its `color.photo_boost`, as `cae colorize`)."""
    path = Path(path)
    data = onnx_bytes(run, boost)
    runs.atomic_write_bytes(path, data)
    return path


def onnx_session(model: bytes | str | Path, threads: int | None = None):  # noqa: ANN201 - an InferenceSession
    """An onnxruntime session (CPU) of an ONNX file or its bytes, `threads` intra-op threads
    (default: onnxruntime's, one per core)."""
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise CaeError(EXTRA) from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


class OnnxNetwork(nn.Module):
    """An onnxruntime session of a colorizer's graph standing in for its network inside
    `cae.Colorizer`: it takes what `Task.network_input` gives without standardization (the
    luma, in [0, 1]; the graph standardizes it) and returns the graph's decoded prediction."""

    def __init__(self, session, output: str) -> None:  # noqa: ANN001
        super().__init__()
        self.session, self.output = session, output
        self.anchor = nn.Parameter(torch.empty(0))  # `predict` finds the device in the parameters: the CPU

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run([self.output], {INPUT: y.contiguous().numpy()})[0])


def onnx_colorizer(run: str | Path = "colorizer", boost: float | None = None, working_size: int | None = None,
                   threads: int | None = None) -> Colorizer:
    """A `cae.Colorizer` whose network runs in onnxruntime: the run's graph exported in memory;
    the photo's reading, working scale, upsampling and merge stay those of `cae colorize`."""
    graph, meta = export_graph(run, boost)
    if graph.task.kind != "colorize":
        raise CaeError(f"{run} is a {graph.task.kind} run, not a colorizer; pass a run trained with --task colorize")
    session = onnx_session(graph_bytes(graph, meta), threads)
    task = dataclasses.replace(graph.task, mean=(), std=())  # the graph standardizes
    return Colorizer(OnnxNetwork(session, graph.output_names[-1]), graph.cfg, task, working_size)
