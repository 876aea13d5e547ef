"""Architectures: a compact text description, named presets and the shape trace.

An architecture is written as encoder layers, `|`, decoder layers, separated by spaces:

    conv8 pool2 conv12 pool2 conv16 | up2 conv12 up2 conv3:sigmoid

Layer tokens (`C` channels, `K` kernel, `S` stride, `P` padding):
  convC[kK][sS][pP]   convolution; K defaults to 3, S to 1, P to 'same' (K//2, odd K only);
                      P may be a number or `v` / `valid` (0). Activation suffix `:relu` (default),
                      `:sigmoid`, `:tanh`, `:lrelu`, `:gelu` or `:none`.
  tconvC[kK][sS][pP]  transposed convolution (K defaults to S, P to 0), e.g. tconv12k2s2.
  poolN               max-pooling with kernel and stride N.
  upN / upNb          nearest / bilinear upsampling by N.
  resC                a residual block of two 3x3 'same' convs, x + conv(relu(conv(x))), then its
                      activation; it keeps the C channels it is given (put a convC before it).
  fcC[sS]             a dense layer: flatten, linear to C*S*S values, reshape to C x S x S (S
                      defaults to 1). In the encoder `fc64:none` is a dense bottleneck of 64 values
                      at any spatial size; in the decoder `fc128s4` makes a 128x4x4 map again.
The last decoder layer defaults to `:sigmoid` when it has no suffix (outputs live in [0, 1]).
`convout` / `tconvout` take the task's output channels (3 for RGB, 2 for chrominance), so one
spec serves reconstruction and colorization.
Weight layers (conv, tconv, res, fc) default to `:relu`; a dense bottleneck is usually `:none`.
A token may be repeated with `xN`, e.g. `conv16x2` is two conv16 layers.

Special architectures that are not plain chains are named: `unetW` (e.g. `unet32`), a U-Net
whose skip connections bypass the bottleneck (so it is not an autoencoder in the strict sense).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from cae.errors import CaeError

MAX_REPEAT, MAX_CHANNELS, MAX_KERNEL = 64, 4096, 31  # beyond these a spec is a typo, not a model
MAX_DENSE_WEIGHTS = 10 ** 8  # 400 MB of float32 in one fc layer: a missing pool, not a design

PRESETS: dict[str, str] = {
    # the handout's 9-layer CAE: latent 16x8x8 = 1,024 values, 4,911 parameters
    "reference": "conv8 pool2 conv12 pool2 conv16 | up2 conv12 up2 convout",
}

WEIGHT_LAYERS = ("conv", "tconv", "res", "fc")  # layers with weights, and an activation (relu by default)
SETS_CHANNELS = ("conv", "tconv", "fc")  # layers that choose their output channels (res keeps its input's)
ACTIVATIONS = ("relu", "sigmoid", "tanh", "lrelu", "gelu", "none")
UNET_LEVELS = 3  # a U-Net pools this many times: sides must divide by 2**UNET_LEVELS

_TOKEN = re.compile(r"^(?P<kind>tconv|conv|pool|up|res|fc)(?P<n>\d+)(?P<bil>b)?"
                    r"(?:k(?P<k>\d+))?(?:s(?P<s>\d+))?(?:p(?P<p>\d+|v|valid|same))?"
                    r"(?:x(?P<rep>\d+))?(?::(?P<act>[a-z]+))?$")


@dataclass(frozen=True)
class Layer:
    """One layer of a chain architecture."""

    kind: str  # 'conv', 'tconv', 'pool', 'up', 'res', 'fc'
    channels: int = 0  # conv / tconv / res / fc output channels
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    scale: int = 0  # pool / up factor; fc: the side S of its C x S x S output
    mode: str = "nearest"  # up: 'nearest' or 'bilinear'
    activation: str = "none"

    def __str__(self) -> str:
        if self.kind in ("conv", "tconv"):
            return f"{self.kind}{self.channels}k{self.kernel}s{self.stride}p{self.padding}:{self.activation}"
        if self.kind == "res":
            return f"res{self.channels}:{self.activation}"
        if self.kind == "fc":
            return f"fc{self.channels}s{self.scale}:{self.activation}"
        if self.kind == "pool":
            return f"pool{self.scale}"
        return f"up{self.scale}{'b' if self.mode == 'bilinear' else ''}"


@dataclass(frozen=True)
class TraceRow:
    """One row of the shape trace: a layer, its output shape, parameters and cost."""

    stage: str  # 'input', 'encoder', 'decoder'
    layer: str
    shape: tuple[int, int, int]  # (C, H, W)
    params: int
    macs: int
    formula: str  # the handout's size formula C*((W-K+2P)/S+1)^2 where it applies

    @property
    def size(self) -> int:
        c, h, w = self.shape
        return c * h * w


@dataclass
class ArchInfo:
    """What `cae info` reports for an architecture."""

    spec: str
    trace: list[TraceRow]
    latent_shape: tuple[int, int, int]
    latent_size: int
    params: int
    macs: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["trace"] = [dict(asdict(r), size=r.size) for r in self.trace]
        return d


def expand(spec: str, out_channels: int = 3) -> str:
    """The chain spec for a preset name or a spec, with `out` channels filled in."""
    text = PRESETS.get(spec.strip(), spec.strip())
    return re.sub(r"\b(t?conv)out", rf"\g<1>{out_channels}", text)


def parse(spec: str, out_channels: int = 3) -> tuple[list[Layer], list[Layer]]:
    """Parse a chain spec into encoder and decoder layers; refuse malformed tokens."""
    text = expand(spec, out_channels)
    if text.count("|") != 1:
        raise CaeError(f"architecture {spec!r} must have exactly one '|' between encoder and decoder "
                       f"(e.g. {PRESETS['reference']!r}), or be a preset: {', '.join(PRESETS)}")
    halves = []
    for half in text.split("|"):
        layers: list[Layer] = []
        for tok in half.split():
            layers.extend(_parse_token(tok, spec))
        halves.append(layers)
    enc, dec = halves
    if not enc or not dec:
        raise CaeError(f"architecture {spec!r} needs at least one layer on each side of '|'")
    if not any(layer.kind in SETS_CHANNELS for layer in dec):
        raise CaeError(f"architecture {spec!r}: the decoder needs a conv, tconv or fc layer to set the output channels")
    last = max(i for i, layer in enumerate(dec) if layer.kind in SETS_CHANNELS)
    if not re.search(r":[a-z]+$", text.split()[-1]) and dec[last].activation == "relu":
        dec[last] = Layer(**{**asdict(dec[last]), "activation": "sigmoid"})
    return enc, dec


def _parse_token(tok: str, spec: str) -> list[Layer]:
    m = _TOKEN.match(tok)
    if not m:
        raise CaeError(f"architecture {spec!r}: cannot read layer {tok!r}; write e.g. conv16k3s1p1:relu, "
                       "tconv12k2s2, pool2, up2 or up2b")
    kind, n = m["kind"], int(m["n"])
    rep = int(m["rep"] or 1)
    act = m["act"] or ("relu" if kind in WEIGHT_LAYERS else "none")
    if act not in ACTIVATIONS:
        raise CaeError(f"architecture {spec!r}: unknown activation {act!r} in {tok!r}; use {', '.join(ACTIVATIONS)}")
    if n < 1 or rep < 1:
        raise CaeError(f"architecture {spec!r}: layer {tok!r} has a zero channel count or factor")
    if rep > MAX_REPEAT or n > MAX_CHANNELS or int(m["k"] or 1) > MAX_KERNEL:
        raise CaeError(f"architecture {spec!r}: layer {tok!r} is too large (at most x{MAX_REPEAT} repeats, "
                       f"{MAX_CHANNELS} channels or factor, kernel {MAX_KERNEL})")
    if kind in ("res", "fc") and (m["k"] or m["p"] or (kind == "res" and m["s"])):
        raise CaeError(f"architecture {spec!r}: {tok!r} takes no kernel or padding"
                       + (" or stride" if kind == "res" else "; fcC or fcCsS (a C x S x S output)"))
    if kind == "res":
        layer = Layer("res", channels=n, kernel=3, padding=1, activation=act)
    elif kind == "fc":
        layer = Layer("fc", channels=n, scale=int(m["s"] or 1), activation=act)
        if layer.scale < 1 or layer.scale > MAX_CHANNELS:
            raise CaeError(f"architecture {spec!r}: the output side of {tok!r} must be 1 to {MAX_CHANNELS}")
    elif kind in ("conv", "tconv"):
        layer = _conv_layer(m, tok, spec, act)
    elif kind == "pool":
        layer = Layer("pool", scale=n)
    else:
        layer = Layer("up", scale=n, mode="bilinear" if m["bil"] else "nearest")
    if m["bil"] and kind != "up":
        raise CaeError(f"architecture {spec!r}: 'b' (bilinear) only applies to up layers, not {tok!r}")
    return [layer] * rep


def _conv_layer(m: re.Match, tok: str, spec: str, act: str) -> Layer:
    """A conv or tconv token's layer: its kernel, stride and padding (defaults filled in)."""
    kind = m["kind"]
    stride = int(m["s"] or 1)
    k = int(m["k"] or (3 if kind == "conv" else stride))
    if k < 1 or stride < 1:
        raise CaeError(f"architecture {spec!r}: layer {tok!r} needs kernel and stride of at least 1")
    p = m["p"]
    if p in (None, "same") and kind == "conv":
        if k % 2 == 0:
            raise CaeError(f"architecture {spec!r}: 'same' padding needs an odd kernel in {tok!r}; "
                           "give the padding explicitly, e.g. k4s2p1")
        pad = k // 2
    elif p in ("v", "valid", None, "same"):
        pad = 0
    else:
        pad = int(p)
    return Layer(kind, channels=int(m["n"]), kernel=k, stride=stride, padding=pad, activation=act)


def trace(spec: str, in_shape: tuple[int, int, int] = (3, 32, 32),
          out_channels: int | None = None) -> ArchInfo:
    """Follow the shapes through the architecture; refuse one that cannot work.

    Refused (a `CaeError` whose message holds the trace so far): a size that does not divide
    (the formula's (W-K+2P)/S is not whole, or a pool that does not divide W), a size that
    shrinks to nothing, and a decoder that does not return `in_shape` (with `out_channels`
    channels, if given).
    """
    if unet_width(spec):
        return unet_trace(spec, in_shape, out_channels)
    want = (out_channels if out_channels is not None else in_shape[0], in_shape[1], in_shape[2])
    enc, dec = parse(spec, want[0])
    rows = [TraceRow("input", "input", in_shape, 0, 0, "")]
    latent = in_shape
    for stage, layers in (("encoder", enc), ("decoder", dec)):
        for layer in layers:
            try:
                rows.append(trace_layer(stage, layer, rows[-1].shape))
            except ValueError as e:
                raise _refusal(spec, str(e), rows) from None
        latent = rows[-1].shape if stage == "encoder" else latent
    if rows[-1].shape != want:
        got = rows[-1].shape
        raise _refusal(spec, f"the decoder returns {got[0]}x{got[1]}x{got[2]}, not {want[0]}x{want[1]}x{want[2]}", rows)
    return ArchInfo(spec=spec, trace=rows, latent_shape=latent, latent_size=latent[0] * latent[1] * latent[2],
                    params=sum(r.params for r in rows), macs=sum(r.macs for r in rows))


def _refusal(spec: str, why: str, rows: list[TraceRow]) -> CaeError:
    lines = "; ".join(f"{r.layer} -> {r.shape[0]}x{r.shape[1]}x{r.shape[2]}" for r in rows)
    return CaeError(f"impossible architecture {spec!r}: {why} (trace: {lines})")


def trace_layer(stage: str, layer: Layer, shape: tuple[int, int, int]) -> TraceRow:
    """One layer's row of the trace: its output shape, parameters, multiply-adds and the size
    formula; a ValueError says why the layer cannot take `shape`."""
    c, h, w = shape
    params = macs = 0
    formula = ""
    if layer.kind in ("res", "fc"):
        return _trace_block(stage, layer, shape)
    if layer.kind == "conv":
        k, s, p = layer.kernel, layer.stride, layer.padding
        if h - k + 2 * p < 0 or w - k + 2 * p < 0:
            raise ValueError(f"{layer} does not fit a {h}x{w} input")
        if (h - k + 2 * p) % s or (w - k + 2 * p) % s:
            raise ValueError(f"{layer} on {h}x{w}: (W-K+2P)/S = ({w}-{k}+2*{p})/{s} is not whole; "
                             "change kernel, padding or stride")
        oh, ow = (h - k + 2 * p) // s + 1, (w - k + 2 * p) // s + 1
        formula = f"{layer.channels}*(({w}-{k}+2*{p})/{s}+1)^2"
    elif layer.kind == "tconv":
        k, s, p = layer.kernel, layer.stride, layer.padding
        oh, ow = (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k
        if oh < 1 or ow < 1:
            raise ValueError(f"{layer} on {h}x{w} gives an empty output")
        formula = f"{layer.channels}*(({w}-1)*{s}-2*{p}+{k})^2"
    elif layer.kind == "pool":
        if h % layer.scale or w % layer.scale:
            raise ValueError(f"pool{layer.scale} does not divide {h}x{w}")
        oh, ow = h // layer.scale, w // layer.scale
        formula = f"{c}*(({w}-{layer.scale})/{layer.scale}+1)^2"
    else:
        oh, ow = h * layer.scale, w * layer.scale
    if oh < 1 or ow < 1:
        raise ValueError(f"{layer} shrinks the image to nothing")
    out_c = layer.channels if layer.kind in WEIGHT_LAYERS else c
    if layer.kind in ("conv", "tconv"):
        params = layer.channels * (c * layer.kernel ** 2 + 1)
        macs = layer.channels * c * layer.kernel ** 2 * (oh * ow if layer.kind == "conv" else h * w)
    formula = f"{formula} = {out_c * oh * ow:,}" if formula and h == w else ""
    return TraceRow(stage, str(layer), (out_c, oh, ow), params, macs, formula)


def _trace_block(stage: str, layer: Layer, shape: tuple[int, int, int]) -> TraceRow:
    """The trace row of a residual block or a dense layer."""
    c, h, w = shape
    n = layer.channels
    if layer.kind == "res":
        if c != n:
            raise ValueError(f"{layer} needs {n} input channels, got {c}; put a conv{n} before it")
        return TraceRow(stage, str(layer), shape, 2 * n * (9 * n + 1), 2 * 9 * n * n * h * w,
                        f"{n}*(({w}-3+2*1)/1+1)^2 = {n * h * w:,}" if h == w else "")
    side = layer.scale
    out = n * side * side
    if c * h * w * out > MAX_DENSE_WEIGHTS:
        raise ValueError(f"{layer} on {c}x{h}x{w} needs {c * h * w * out:,} weights; pool or stride first")
    return TraceRow(stage, str(layer), (n, side, side), c * h * w * out + out, c * h * w * out,
                    f"{n}*{side}^2 = {out:,}")


def unet_width(spec: str) -> int:
    """The base width W of a `unetW` spec, 0 for a chain spec."""
    m = re.fullmatch(r"unet(\d+)", spec.strip())
    if m and int(m[1]) < 1:
        raise CaeError(f"architecture {spec!r}: the U-Net width must be at least 1")
    return int(m[1]) if m else 0


def unet_channels(width: int) -> tuple[list[int], list[int]]:
    """Channels of the U-Net's encoder levels (W, 2W, 4W; the bottleneck keeps 4W) and of its
    decoder levels (2W, W, W), for `cae.core.unet.UNet` and its trace alike."""
    enc = [width * 2 ** i for i in range(UNET_LEVELS)]
    return enc, [*enc[-2::-1], width]


def class_grid(out_channels: int) -> int:
    """K when a U-Net's `out_channels` asks for a K x K chroma classifier (a square above 3), else 0."""
    k = round(out_channels ** 0.5)
    return k if out_channels > 3 and k * k == out_channels else 0


def unet_trace(spec: str, in_shape: tuple[int, int, int], out_channels: int | None = None) -> ArchInfo:
    """The U-Net's shape trace: 3x3 conv blocks (a normalization with 2 parameters per channel),
    2x2 max-pooling down, bilinear 2x upsampling and a skip concatenation up, a 1x1 head."""
    c, h, w = in_shape
    stride = 2 ** UNET_LEVELS
    if h % stride or w % stride:
        raise CaeError(f"architecture {spec!r}: the U-Net needs sides divisible by {stride}, got {h}x{w}")
    out_c = out_channels if out_channels is not None else c
    enc, dec = unet_channels(unet_width(spec))
    rows = [TraceRow("input", "input", in_shape, 0, 0, "")]

    def block(stage: str, name: str, c_in: int, c_out: int, hh: int, ww: int) -> None:
        rows.append(TraceRow(stage, name, (c_out, hh, ww), 9 * c_in * c_out + 2 * c_out, 9 * c_in * c_out * hh * ww, ""))

    for i, c_out in enumerate(enc):
        block("encoder", f"conv{c_out}k3+norm", c, c_out, h, w)
        c, h, w = c_out, h // 2, w // 2
        rows.append(TraceRow("encoder", f"pool2 (skip {i + 1} saved)", (c, h, w), 0, 0, ""))
    block("encoder", f"conv{c}k3+norm (bottleneck)", c, c, h, w)
    latent = rows[-1].shape
    for i, (c_out, skip) in enumerate(zip(dec, enc[::-1])):
        h, w = h * 2, w * 2
        block("decoder", f"up2b+skip{UNET_LEVELS - i} conv{c_out}k3+norm", c + skip, c_out, h, w)
        c = c_out
    if class_grid(out_c):  # a chroma classifier: bin logits from 2x2-averaged features (cae.core.unet)
        h, w = h // 2, w // 2
        rows.append(TraceRow("decoder", f"avgpool2 conv{out_c}k1 (chroma bin logits)", (out_c, h, w),
                             c * out_c + out_c, c * out_c * h * w, ""))
    else:
        rows.append(TraceRow("decoder", f"conv{out_c}k1:sigmoid", (out_c, h, w), c * out_c + out_c,
                             c * out_c * h * w, ""))
    return ArchInfo(spec=spec, trace=rows, latent_shape=latent, latent_size=latent[0] * latent[1] * latent[2],
                    params=sum(r.params for r in rows), macs=sum(r.macs for r in rows))
