"""The model a reader sees: an architecture spec built from plain `torch.nn` layers.

`build_model("reference")` is the handout's layer list, in order, as textbook modules
(Conv2d, ReLU, MaxPool2d, Upsample, Sigmoid) that print and can be edited as such. A faster
equivalent for training is made from it by `cae.fast.accelerate`, never here.
"""

from __future__ import annotations

import torch
from torch import nn

from cae.core.spec import Layer, expand, parse, trace, unet_width
from cae.core.unet import UNet

ACTIVATION_MODULES = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "lrelu": lambda: nn.LeakyReLU(0.1),
                      "gelu": nn.GELU}


class AutoEncoder(nn.Module):
    """A chain autoencoder: `encoder(x)` is the latent code, `decoder(z)` the reconstruction."""

    def __init__(self, encoder: nn.Sequential, decoder: nn.Sequential, spec: str):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class Residual(nn.Module):
    """x + conv(relu(conv(x))) with two 3x3 'same' convs that keep the channels (a `resC` layer)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


def layer_modules(layer: Layer, in_shape: tuple[int, int, int]) -> list[nn.Module]:
    """The textbook modules of one layer of the spec, given its input (C, H, W): the layer,
    then its activation."""
    c, h, w = in_shape
    if layer.kind == "pool":
        return [nn.MaxPool2d(layer.scale)]
    if layer.kind == "up":
        return [nn.Upsample(scale_factor=layer.scale, mode=layer.mode)]
    if layer.kind == "res":
        mods: list[nn.Module] = [Residual(layer.channels)]
    elif layer.kind == "fc":
        side = layer.scale
        mods = [nn.Flatten(), nn.Linear(c * h * w, layer.channels * side * side),
                nn.Unflatten(1, (layer.channels, side, side))]
    else:
        conv = nn.Conv2d if layer.kind == "conv" else nn.ConvTranspose2d
        mods = [conv(c, layer.channels, layer.kernel, layer.stride, layer.padding)]
    if layer.activation != "none":
        mods.append(ACTIVATION_MODULES[layer.activation]())
    return mods


def build_model(spec: str, in_channels: int = 3, out_channels: int | None = None,
                image_size: int = 32) -> nn.Module:
    """The model of a spec (a preset name such as "reference", or a chain spec, or `unetW`),
    after checking its shape trace: an impossible architecture is a `CaeError` with the trace."""
    out_channels = in_channels if out_channels is None else out_channels
    info = trace(spec, (in_channels, image_size, image_size), out_channels)
    if unet_width(spec):
        return UNet(in_channels, out_channels, unet_width(spec))
    shapes = iter(row.shape for row in info.trace)  # each layer's input is the row before it
    halves = [[m for layer in layers for m in layer_modules(layer, next(shapes))]
              for layers in parse(spec, out_channels)]
    return AutoEncoder(nn.Sequential(*halves[0]), nn.Sequential(*halves[1]), expand(spec, out_channels))


def receptive_field(spec: str, in_channels: int = 3, out_channels: int | None = None, image_size: int = 32) -> int:
    """The side of the largest input window one output pixel of a chain model depends on.

    Measured, not estimated: on a linear copy of the chain (every conv's weights 1, max-pooling
    as averaging, so each input in the window gets a nonzero gradient), the gradient of each
    output pixel of the middle column is taken with respect to the input, and the widest span
    of rows it touches is the answer (nearest upsampling makes it depend on the pixel's phase).
    """
    model = build_model(spec, in_channels, out_channels, image_size)
    if not isinstance(model, AutoEncoder) or any(isinstance(m, (Residual, nn.Linear)) for m in model.modules()):
        raise ValueError(f"{spec!r} is not a chain of convolutions, pooling and upsampling")
    linear: list[nn.Module] = []
    for m in (*model.encoder, *model.decoder):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            conv = type(m)(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=False)
            nn.init.ones_(conv.weight)
            linear.append(conv)
        elif isinstance(m, nn.MaxPool2d):
            linear.append(nn.AvgPool2d(m.kernel_size, m.stride))
        elif isinstance(m, nn.Upsample):
            linear.append(m)
    x = torch.ones(1, in_channels, image_size, image_size, requires_grad=True)
    y = nn.Sequential(*linear)(x)
    widest = 0
    for row in range(y.shape[-2]):
        (grad,) = torch.autograd.grad(y[0, :, row, y.shape[-1] // 2].sum(), x, retain_graph=True)
        touched = grad[0].abs().sum(dim=(0, 2)).nonzero()
        widest = max(widest, int(touched.max() - touched.min() + 1))
    return widest
