"""Architectures: a compact text description, named presets, the shape trace, the model.

An architecture is written as encoder layers, `|`, decoder layers, separated by spaces:

    conv8 pool2 conv12 pool2 conv16 | up2 conv12 up2 conv3:sigmoid

Layer tokens (`C` channels, `K` kernel, `S` stride, `P` padding):
  convC[kK][sS][pP]   convolution; K defaults to 3, S to 1, P to 'same' (K//2, odd K only);
                      P may be a number or `v` / `valid` (0). Activation suffix `:relu` (default),
                      `:sigmoid`, `:tanh`, `:lrelu`, `:gelu` or `:none`.
  tconvC[kK][sS][pP]  transposed convolution (K defaults to S, P to 0), e.g. tconv12k2s2.
  poolN               max-pooling with kernel and stride N.
  upN / upNb          nearest / bilinear upsampling by N.
The last decoder layer defaults to `:sigmoid` when it has no suffix (outputs live in [0, 1]).
`convout` / `tconvout` take the task's output channels (3 for RGB, 2 for chrominance), so one
spec serves reconstruction and colorization.
A token may be repeated with `xN`, e.g. `conv16x2` is two conv16 layers.

Special architectures that are not plain chains are named: `unetW` (e.g. `unet32`), a U-Net
whose skip connections bypass the bottleneck (so it is not an autoencoder in the strict sense).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from cae import kernels
from cae.errors import CaeError

MAX_REPEAT, MAX_CHANNELS, MAX_KERNEL = 64, 4096, 31  # beyond these a spec is a typo, not a model

PRESETS: dict[str, str] = {
    # the handout's 9-layer CAE: latent 16x8x8 = 1,024 values, 4,911 parameters
    "reference": "conv8 pool2 conv12 pool2 conv16 | up2 conv12 up2 convout",
}

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "lrelu": lambda: nn.LeakyReLU(0.1),
               "gelu": nn.GELU, "none": nn.Identity}

_TOKEN = re.compile(r"^(?P<kind>tconv|conv|pool|up)(?P<n>\d+)(?P<bil>b)?"
                    r"(?:k(?P<k>\d+))?(?:s(?P<s>\d+))?(?:p(?P<p>\d+|v|valid|same))?"
                    r"(?:x(?P<rep>\d+))?(?::(?P<act>[a-z]+))?$")


@dataclass(frozen=True)
class Layer:
    """One layer of a chain architecture."""

    kind: str  # 'conv', 'tconv', 'pool', 'up'
    channels: int = 0  # conv / tconv output channels
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    scale: int = 0  # pool / up factor
    mode: str = "nearest"  # up: 'nearest' or 'bilinear'
    activation: str = "none"

    def __str__(self) -> str:
        if self.kind in ("conv", "tconv"):
            return f"{self.kind}{self.channels}k{self.kernel}s{self.stride}p{self.padding}:{self.activation}"
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
    if not any(layer.kind in ("conv", "tconv") for layer in dec):
        raise CaeError(f"architecture {spec!r}: the decoder needs a conv or tconv layer to set the output channels")
    last = max(i for i, layer in enumerate(dec) if layer.kind in ("conv", "tconv"))
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
    act = m["act"] or ("relu" if kind in ("conv", "tconv") else "none")
    if act not in ACTIVATIONS:
        raise CaeError(f"architecture {spec!r}: unknown activation {act!r} in {tok!r}; use {', '.join(ACTIVATIONS)}")
    if n < 1 or rep < 1:
        raise CaeError(f"architecture {spec!r}: layer {tok!r} has a zero channel count or factor")
    if rep > MAX_REPEAT or n > MAX_CHANNELS or int(m["k"] or 1) > MAX_KERNEL:
        raise CaeError(f"architecture {spec!r}: layer {tok!r} is too large (at most x{MAX_REPEAT} repeats, "
                       f"{MAX_CHANNELS} channels or factor, kernel {MAX_KERNEL})")
    if kind in ("conv", "tconv"):
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
        layer = Layer(kind, channels=n, kernel=k, stride=stride, padding=pad, activation=act)
    elif kind == "pool":
        layer = Layer("pool", scale=n)
    else:
        layer = Layer("up", scale=n, mode="bilinear" if m["bil"] else "nearest")
    if m["bil"] and kind != "up":
        raise CaeError(f"architecture {spec!r}: 'b' (bilinear) only applies to up layers, not {tok!r}")
    return [layer] * rep


def trace(spec: str, in_shape: tuple[int, int, int] = (3, 32, 32),
          out_channels: int | None = None) -> ArchInfo:
    """Follow the shapes through the architecture; refuse one that cannot work.

    Refused (a `CaeError` whose message holds the trace so far): a size that does not divide
    (the formula's (W-K+2P)/S is not whole, or a pool that does not divide W), a size that
    shrinks to nothing, and a decoder that does not return `in_shape` (with `out_channels`
    channels, if given).
    """
    if _unet_width(spec):
        return _unet_info(spec, in_shape, out_channels)
    want_c = out_channels if out_channels is not None else in_shape[0]
    enc, dec = parse(spec, want_c)
    rows = [TraceRow("input", "input", in_shape, 0, 0, "")]
    c, h, w = in_shape

    def fail(msg: str) -> CaeError:
        lines = "; ".join(f"{r.layer} -> {r.shape[0]}x{r.shape[1]}x{r.shape[2]}" for r in rows)
        return CaeError(f"impossible architecture {spec!r}: {msg} (trace: {lines})")

    latent = None
    for stage, layers in (("encoder", enc), ("decoder", dec)):
        for layer in layers:
            formula = ""
            if layer.kind == "conv":
                num_h, num_w = h - layer.kernel + 2 * layer.padding, w - layer.kernel + 2 * layer.padding
                if num_h < 0 or num_w < 0:
                    raise fail(f"{layer} does not fit a {h}x{w} input")
                if num_h % layer.stride or num_w % layer.stride:
                    raise fail(f"{layer} on {h}x{w}: (W-K+2P)/S = ({w}-{layer.kernel}+2*{layer.padding})/{layer.stride} "
                               "is not whole; change kernel, padding or stride")
                oh, ow = num_h // layer.stride + 1, num_w // layer.stride + 1
                params = layer.channels * (c * layer.kernel ** 2 + 1)
                macs = layer.channels * c * layer.kernel ** 2 * oh * ow
                formula = (f"{layer.channels}*(({w}-{layer.kernel}+2*{layer.padding})/{layer.stride}+1)^2"
                           f" = {layer.channels * oh * ow:,}") if h == w else ""
                c, h, w = layer.channels, oh, ow
            elif layer.kind == "tconv":
                oh = (h - 1) * layer.stride - 2 * layer.padding + layer.kernel
                ow = (w - 1) * layer.stride - 2 * layer.padding + layer.kernel
                if oh < 1 or ow < 1:
                    raise fail(f"{layer} on {h}x{w} gives an empty output")
                params = layer.channels * (c * layer.kernel ** 2 + 1)
                macs = layer.channels * c * layer.kernel ** 2 * h * w
                formula = (f"{layer.channels}*(({w}-1)*{layer.stride}-2*{layer.padding}+{layer.kernel})^2"
                           f" = {layer.channels * oh * ow:,}") if h == w else ""
                c, h, w = layer.channels, oh, ow
            elif layer.kind == "pool":
                if h % layer.scale or w % layer.scale:
                    raise fail(f"pool{layer.scale} does not divide {h}x{w}")
                h, w = h // layer.scale, w // layer.scale
                params, macs = 0, 0
                formula = f"{c}*(({w * layer.scale}-{layer.scale})/{layer.scale}+1)^2 = {c * h * w:,}" if h == w else ""
            else:
                h, w = h * layer.scale, w * layer.scale
                params, macs = 0, 0
            if h < 1 or w < 1:
                raise fail(f"{layer} shrinks the image to nothing")
            rows.append(TraceRow(stage, str(layer), (c, h, w), params, macs, formula))
        if stage == "encoder":
            latent = (c, h, w)
    if (c, h, w) != (want_c, in_shape[1], in_shape[2]):
        raise fail(f"the decoder returns {c}x{h}x{w}, not {want_c}x{in_shape[1]}x{in_shape[2]}")
    assert latent is not None
    return ArchInfo(spec=spec, trace=rows, latent_shape=latent, latent_size=latent[0] * latent[1] * latent[2],
                    params=sum(r.params for r in rows), macs=sum(r.macs for r in rows))


def fold_upsample_weight(weight: torch.Tensor, scale: int) -> tuple[torch.Tensor, int]:
    """Rewrite "nearest-upsample by `scale`, then conv (odd K, 'same')" as one low-resolution conv.

    Output pixel (s*i + a) of the conv reads upsampled pixels s*i + a + d (|d| <= K//2), which are
    low-resolution pixels i + floor((a + d) / s). Summing the taps that land on the same
    low-resolution pixel gives, per output phase (a, b), a small kernel; stacking the s*s phases
    as channels and interleaving them back (`phase_shuffle`) is exactly the original (zero padding
    included), without ever building the upsampled tensor. The channels are phase-major (a, b, o),
    so the interleave copies runs of Co contiguous values in channels_last memory, ~4x faster than
    `pixel_shuffle`'s (o, a, b) order. Returns (weight (s*s*Co, Ci, K', K'), padding).
    """
    co, ci, k, _ = weight.shape
    taps, r = _fold_taps(k, scale)
    taps = taps.to(weight.device, weight.dtype)
    w = torch.einsum("aut,bvs,oits->aboiuv", taps, taps, weight)
    return w.reshape(co * scale * scale, ci, 2 * r + 1, 2 * r + 1), r


@functools.lru_cache(maxsize=None)
def _fold_taps(k: int, scale: int) -> tuple[torch.Tensor, int]:
    """taps[a, u, t] = 1 when tap t of output phase a reads low-resolution offset u - r (built
    once per shape: the Python loop would otherwise run at every training step)."""
    p = k // 2
    r = max(-((-p) // scale), (scale - 1 + p) // scale)
    taps = torch.zeros(scale, 2 * r + 1, k)
    for a in range(scale):
        for t in range(k):
            taps[a, (a + t - p) // scale + r, t] = 1
    return taps, r


def phase_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Interleave phase-major channels (a, b, c) into a `scale` times larger image:
    out[:, c, s*i + a, s*j + b] = x[:, (a*s + b)*C + c, i, j]. Returns a channels_last tensor."""
    return kernels.interleave(x, scale)


class UpsampleConv2d(nn.Conv2d):
    """Nearest upsampling by `scale` followed by this conv (stride 1, 'same'), computed at low
    resolution (see `fold_upsample_weight`). Same parameters and state_dict as the plain conv;
    measured faster on CPU (see `cae bench`), identical output up to float rounding. A ReLU that
    follows is applied during the interleave (`activation='relu'`, see `cae.kernels`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, scale: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.scale = scale
        self.activation = "none"
        self.frozen: tuple[torch.Tensor, torch.Tensor | None, int] | None = None  # see `frozen_folds`

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """(weight, bias, padding) of the low-resolution conv."""
        if self.frozen is not None:
            return self.frozen
        w, pad = fold_upsample_weight(self.weight, self.scale)
        bias = self.bias.repeat(self.scale ** 2) if self.bias is not None else None
        return w, bias, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, bias, pad = self.folded()
        return kernels.shuffle_activate(nn.functional.conv2d(x, w, bias, padding=pad), self.scale, self.activation)


@contextlib.contextmanager
def frozen_folds(model: nn.Module) -> Iterator[None]:
    """Fold the weights of every `UpsampleConv2d` in `model` once, for a block in which its
    parameters do not change (evaluation), instead of at every forward: ~5% of an evaluation
    pass in bf16. The folds are computed without autograd and dropped on exit."""
    mods = [m for m in model.modules() if isinstance(m, UpsampleConv2d)]
    with torch.no_grad():
        for m in mods:
            m.frozen = None
            m.frozen = m.folded()
    try:
        yield
    finally:
        for m in mods:
            m.frozen = None


class MaxPool2d(nn.MaxPool2d):
    """`nn.MaxPool2d`, optionally followed by a ReLU (`relu=True`), with fast paths for the
    common case (2x2, stride 2): `cae.kernels.max_pool2` (one pass each way on CPU, the same
    values and gradients as `max_pool2d`)."""

    def __init__(self, kernel_size: int, relu: bool = False):
        super().__init__(kernel_size)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _pool2(self) and x.dim() == 4:
            return kernels.max_pool2(x, self.relu)
        y = super().forward(x)
        return torch.relu(y) if self.relu else y


class ConvPool2d(nn.Conv2d):
    """A 'same' conv (stride 1, odd kernel) and the 2x2 max-pool after it, optionally with a
    ReLU (the pool's): `build_model` makes one of each such pair, sharing the conv's
    parameters (the pool's place is kept by an `nn.Identity`, so the state_dict is the same).
    Training runs the conv, then `cae.kernels.max_pool2`; inference runs
    `cae.kernels.conv_pool2`, one pass for a first layer (1 or 3 input channels) on CPU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 device: torch.device | str | None = None, relu: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias, device=device)
        self.relu = relu

    @classmethod
    def of(cls, conv: nn.Conv2d, relu: bool) -> "ConvPool2d":
        """The fused module for `conv`, with the same Parameter objects (no new random draws)."""
        fused = torch.nn.utils.skip_init(cls, conv.in_channels, conv.out_channels, conv.kernel_size[0],
                                         bias=conv.bias is not None, relu=relu)
        fused.weight, fused.bias = conv.weight, conv.bias
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return kernels.max_pool2(super().forward(x), self.relu)
        return kernels.conv_pool2(x, self.weight, self.bias, self.relu)


def _conv_then_pool(conv: nn.Module, pool: nn.Module) -> bool:
    k = conv.kernel_size[0] if isinstance(conv, nn.Conv2d) else 0
    return (type(conv) is nn.Conv2d and k % 2 == 1 and conv.kernel_size == (k, k) and conv.stride == (1, 1)
            and conv.padding == (k // 2, k // 2) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and isinstance(pool, MaxPool2d) and _pool2(pool))


def _pool2(pool: nn.MaxPool2d) -> bool:
    return (pool.kernel_size in (2, (2, 2)) and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))
            and pool.dilation in (1, (1, 1)) and not pool.ceil_mode and not pool.return_indices)


class AutoEncoder(nn.Module):
    """A chain autoencoder: `encoder(x)` is the latent code, `decoder(z)` the reconstruction."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, spec: str):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _fusable(up: Layer, conv: Layer) -> bool:
    return (up.kind == "up" and up.mode == "nearest" and conv.kind == "conv" and conv.stride == 1
            and conv.kernel % 2 == 1 and conv.padding == conv.kernel // 2)


def _module(layer: Layer, in_c: int, after_up: int = 0, plain: bool = False) -> list[nn.Module]:
    if after_up:
        mods: list[nn.Module] = [UpsampleConv2d(in_c, layer.channels, layer.kernel, after_up)]
    elif layer.kind == "conv":
        mods: list[nn.Module] = [nn.Conv2d(in_c, layer.channels, layer.kernel, layer.stride, layer.padding)]
    elif layer.kind == "tconv":
        mods = [nn.ConvTranspose2d(in_c, layer.channels, layer.kernel, layer.stride, layer.padding)]
    elif layer.kind == "pool":
        return [nn.MaxPool2d(layer.scale) if plain else MaxPool2d(layer.scale)]
    elif layer.kind == "up":
        return [nn.Upsample(scale_factor=layer.scale, mode=layer.mode)]
    if layer.activation == "relu":
        # conv outputs are not needed by the conv's backward: safe in place
        mods.append(nn.ReLU(inplace=not plain))
    elif layer.activation != "none":
        mods.append(ACTIVATIONS[layer.activation]())
    return mods


def build_model(spec: str, in_channels: int = 3, out_channels: int | None = None,
                image_size: int = 32, plain: bool = False) -> nn.Module:
    """Build the model for a spec after checking its shape trace (refuses impossible ones).

    By default the chain is rewritten into an equivalent, faster one (same function, same
    state_dict): a nearest upsampling followed by a 'same' conv becomes one `UpsampleConv2d`
    (the upsampling module stays as an `nn.Identity`, so parameter names do not change), a
    monotone activation moves behind the max-pooling that follows it (which then applies it),
    ReLUs work in place, and a 'same' conv followed by a 2x2 max-pool becomes one `ConvPool2d`
    (one pass at inference for a first layer). `plain=True` builds the textbook modules in spec order
    instead (the naive baseline of `cae bench`, and what the rewrites are tested against).
    """
    out_channels = in_channels if out_channels is None else out_channels
    trace(spec, (in_channels, image_size, image_size), out_channels)
    width = _unet_width(spec)
    if width:
        from cae.unet import UNet

        return UNet(in_channels, out_channels, width)
    enc, dec = parse(spec, out_channels)
    mods: list[list[nn.Module]] = [[], []]
    c = in_channels
    for i, layers in enumerate((enc, dec)):
        for j, layer in enumerate(layers):
            if not plain and j + 1 < len(layers) and _fusable(layer, layers[j + 1]):
                mods[i].append(nn.Identity())  # the upsampling happens inside the next conv
                continue
            fused_up = layers[j - 1].scale if not plain and j > 0 and _fusable(layers[j - 1], layer) else 0
            mods[i].extend(_module(layer, c, fused_up, plain))
            c = layer.channels if layer.kind in ("conv", "tconv") else c
    if not plain:
        mods = [_fuse_conv_pool(_fuse_relu(_pool_before_activation(m))) for m in mods]
    return AutoEncoder(nn.Sequential(*mods[0]), nn.Sequential(*mods[1]), expand(spec, out_channels))


_MONOTONE = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh)  # non-decreasing: they commute with max


def _pool_before_activation(mods: list[nn.Module]) -> list[nn.Module]:
    """Swap "activation, max-pool" into "max-pool, activation": the same function for a monotone
    activation (max(f(a), f(b)) = f(max(a, b))), with the activation and its backward on a
    quarter of the values. Neither module has parameters, so the state_dict keys do not change."""
    mods = list(mods)
    for i in range(len(mods) - 1):
        if isinstance(mods[i], _MONOTONE) and isinstance(mods[i + 1], nn.MaxPool2d):
            mods[i], mods[i + 1] = mods[i + 1], mods[i]
    return mods


def _fuse_relu(mods: list[nn.Module]) -> list[nn.Module]:
    """Let a fast max-pool or upsampling conv apply the ReLU that follows it (one pass over the
    activation instead of two, each way); the ReLU's place is kept by an `nn.Identity`."""
    mods = list(mods)
    for i in range(len(mods) - 1):
        if isinstance(mods[i + 1], nn.ReLU) and isinstance(mods[i], MaxPool2d) and _pool2(mods[i]):
            mods[i].relu, mods[i + 1] = True, nn.Identity()
        elif isinstance(mods[i + 1], nn.ReLU) and isinstance(mods[i], UpsampleConv2d):
            mods[i].activation, mods[i + 1] = "relu", nn.Identity()
    return mods


def _fuse_conv_pool(mods: list[nn.Module]) -> list[nn.Module]:
    """Make each "conv, 2x2 max-pool" pair one `ConvPool2d` (see there); the pool's place is
    kept by an `nn.Identity`."""
    mods = list(mods)
    for i in range(len(mods) - 1):
        if _conv_then_pool(mods[i], mods[i + 1]):
            mods[i], mods[i + 1] = ConvPool2d.of(mods[i], mods[i + 1].relu), nn.Identity()
    return mods


def _unet_width(spec: str) -> int:
    m = re.fullmatch(r"unet(\d+)", spec.strip())
    if m and int(m[1]) < 1:
        raise CaeError(f"architecture {spec!r}: the U-Net width must be at least 1")
    return int(m[1]) if m else 0


def _unet_info(spec: str, in_shape: tuple[int, int, int], out_channels: int | None) -> ArchInfo:
    from cae.unet import UNet

    c, h, w = in_shape
    if h % 8 or w % 8:
        raise CaeError(f"architecture {spec!r}: the U-Net needs sides divisible by 8, got {h}x{w}")
    oc = out_channels if out_channels is not None else c
    model = UNet(c, oc, _unet_width(spec))
    return model.info(spec, in_shape)
