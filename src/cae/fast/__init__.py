"""The optional fast path: a faster module that computes the same function as a plain model.

`accelerate(model)` returns an equivalent of a plain `cae.core.model.AutoEncoder` that shares
its Parameters (so both have the same `state_dict` and train as one), rewritten where that is
measured to pay (docs/performance.md):

- a nearest upsampling followed by a 'same' stride-1 conv becomes one `UpsampleConv2d`: the
  conv runs at low resolution with folded weights and its phases are interleaved, so the
  upsampled tensor is never built (the upsampling's place is kept by an `nn.Identity`);
- a ReLU in front of a max-pool moves behind it (max(relu(a), relu(b)) = relu(max(a, b))), so it
  and its backward touch a quarter of the values (other monotone activations would too, but in
  bf16 their rounding makes ties that send a pool's gradient to another pixel: not moved);
- ReLUs work in place; the model runs channels_last (an upsampled output of fewer than 8
  channels, such as the RGB image, comes out NCHW: see `PhaseInterleave`).

Setting the environment variable `CAE_FAST=0` turns all of it off (`enabled()`): the trainer
then runs the plain model. `tests/test_fast.py` proves the rewrites equal to the plain model,
forward and backward, in float32 and bfloat16.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from cae.core.model import AutoEncoder

def enabled() -> bool:
    """Whether the fast path is on (the default; `CAE_FAST=0` turns it off)."""
    return os.environ.get("CAE_FAST", "1") != "0"


def accelerate(model: nn.Module) -> nn.Module:
    """The fast equivalent of a plain model, channels_last; models other than a chain
    autoencoder (the U-Net) only change their memory format."""
    if isinstance(model, AutoEncoder):
        model = AutoEncoder(rewrite(model.encoder), rewrite(model.decoder), model.spec)
    return model.to(memory_format=torch.channels_last)


def rewrite(chain: nn.Sequential) -> nn.Sequential:
    """The rewritten chain; its module indices, so its parameter names, are the plain chain's."""
    mods = list(chain)
    for i in range(len(mods) - 1):
        if _upsample_then_same_conv(mods[i], mods[i + 1]):
            mods[i], mods[i + 1] = nn.Identity(), UpsampleConv2d.of(mods[i + 1], int(mods[i].scale_factor))
        elif type(mods[i]) is nn.ReLU and isinstance(mods[i + 1], nn.MaxPool2d):
            mods[i], mods[i + 1] = mods[i + 1], mods[i]
    # a conv's output is not needed by the conv's backward, nor a pool's by the pool's
    return nn.Sequential(*(nn.ReLU(inplace=True) if type(m) is nn.ReLU else m for m in mods))


def _upsample_then_same_conv(up: nn.Module, conv: nn.Module) -> bool:
    if not (isinstance(up, nn.Upsample) and up.mode == "nearest" and type(conv) is nn.Conv2d):
        return False
    scale = up.scale_factor
    k = conv.kernel_size[0]
    return (isinstance(scale, (int, float)) and float(scale).is_integer() and conv.kernel_size == (k, k)
            and k % 2 == 1 and conv.stride == (1, 1) and conv.padding == (k // 2, k // 2)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


class UpsampleConv2d(nn.Conv2d):
    """Nearest upsampling by `scale`, then this 'same' conv, computed at low resolution."""

    scale: int = 1

    @classmethod
    def of(cls, conv: nn.Conv2d, scale: int) -> "UpsampleConv2d":
        """The module for `conv` after an upsampling, with the same Parameter objects."""
        fused = torch.nn.utils.skip_init(cls, conv.in_channels, conv.out_channels, conv.kernel_size,
                                         padding=conv.padding, bias=conv.bias is not None)
        fused.weight, fused.bias, fused.scale = conv.weight, conv.bias, scale
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = fold_plan(self.kernel_size[0], self.scale)
        bias = self.bias.repeat(self.scale ** 2) if self.bias is not None else None
        y = nn.functional.conv2d(x, fold_upsample_weight(self.weight, self.scale), bias, padding=plan.pad)
        return PhaseInterleave.apply(y, self.scale, plan.step, x.shape[-2], x.shape[-1])


@dataclass(frozen=True)
class FoldPlan:
    """How "nearest-upsample by s, then a 'same' conv of odd size k" runs at low resolution.

    Output pixel (s*i + a) of the conv reads upsampled pixels s*i + a + d (|d| <= k//2), which are
    low-resolution pixels i + (a + d) // s: a window of `size` pixels starting at i + a*step - pad
    for phase a. taps[a, u, t] = 1 when tap t of phase a lands on pixel u of that window.
    """

    taps: torch.Tensor  # (s, size, k)
    size: int  # the low-resolution kernel's side
    pad: int  # zero padding of the low-resolution input, on every side
    step: int  # 1: each phase's window starts one pixel after the previous phase's; 0: all at i - pad


@functools.lru_cache(maxsize=None)
def fold_plan(k: int, scale: int) -> FoldPlan:
    """The fold of a k x k conv after an upsampling by `scale` (made once per shape)."""
    p = k // 2
    first = [(a - p) // scale for a in range(scale)]  # phase a's first low-resolution offset
    last = [(a + k - 1 - p) // scale for a in range(scale)]
    if all(f - first[0] == a for a, f in enumerate(first)):
        # the windows slide by one pixel per phase (scale 2 always): each phase gets its own, the
        # smallest, window (a 3x3 conv after up2 becomes 2x2 per phase, not 3x3: 4/9 the work)
        starts, step = first, 1
    else:  # one window wide enough for every phase
        starts, step = [min(first)] * scale, 0
    size = max(lst - s for lst, s in zip(last, starts)) + 1
    taps = torch.zeros(scale, size, k)
    for a in range(scale):
        for t in range(k):
            taps[a, (a + t - p) // scale - starts[a], t] = 1
    return FoldPlan(taps, size, -starts[0], step)


def fold_upsample_weight(weight: torch.Tensor, scale: int) -> torch.Tensor:
    """The low-resolution conv's weight (s*s*Co, Ci, size, size) for `fold_plan`: per output phase
    (a, b), the sum of the taps that land on the same low-resolution pixel. The channels are
    phase-major (a, b, o): each phase is one slice of Co channels for `PhaseInterleave` to copy.

    The taps are summed in the weight's own dtype even under autocast, which would run the einsum
    in bf16 and round every tap before summing: the conv then rounds each sum once, as it rounds
    a plain weight."""
    co, ci, k, _ = weight.shape
    plan = fold_plan(k, scale)
    taps = plan.taps.to(weight.device, weight.dtype)
    with torch.autocast(weight.device.type, enabled=False):
        w = torch.einsum("aut,bvs,oits->aboiuv", taps, taps, weight)
    return w.reshape(co * scale * scale, ci, plan.size, plan.size)


def _phase_pairs(y: torch.Tensor, out: torch.Tensor, scale: int, step: int, h: int, w: int):  # noqa: ANN202
    """(phase (a, b) of the low-resolution y, the pixels of the image `out` it fills), per phase:
    out[:, c, s*i + a, s*j + b] = y[:, (a*s + b)*C + c, i + a*step, j + b*step]."""
    n, c = out.shape[:2]
    pixels = out.view(n, c, h, scale, w, scale)
    for a in range(scale):
        for b in range(scale):
            k = (a * scale + b) * c
            yield y[:, k:k + c, a * step:a * step + h, b * step:b * step + w], pixels[:, :, :, a, :, b]


# A phase is copied in runs along out's contiguous dim: its channels in channels_last, its rows in
# NCHW. With few channels (an RGB or chroma output) runs of 3 values are several times slower to
# copy than rows, so such an image comes out NCHW (every op after it takes either layout).
MIN_CHANNELS_LAST = 8


class PhaseInterleave(torch.autograd.Function):
    """The low-resolution conv's phases interleaved into the (h*s, w*s) image (`_phase_pairs`):
    one strided copy per phase each way; channels_last, or NCHW below MIN_CHANNELS_LAST channels.
    Written as a Function because autograd's own backward of such views scatters through index
    tensors, which cost more than the fold saves."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, scale: int, step: int, h: int, w: int) -> torch.Tensor:  # noqa: ANN001
        ctx.geometry = (y.shape, y.dtype, y.device, scale, step, h, w)
        n, c = y.shape[0], y.shape[1] // (scale * scale)
        layout = torch.channels_last if c >= MIN_CHANNELS_LAST else torch.contiguous_format
        out = torch.empty((n, c, h * scale, w * scale), dtype=y.dtype, device=y.device, memory_format=layout)
        for phase, pixels in _phase_pairs(y, out, scale, step, h, w):
            pixels.copy_(phase)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:  # noqa: ANN001
        shape, dtype, device, scale, step, h, w = ctx.geometry
        # pixels no phase reads (a window's far edge) get no gradient
        grad_y = torch.empty(shape, dtype=dtype, device=device, memory_format=torch.channels_last).zero_()
        for phase, pixels in _phase_pairs(grad_y, grad, scale, step, h, w):
            phase.copy_(pixels)
        return grad_y, None, None, None, None


def path() -> Callable[[nn.Module], nn.Module] | None:
    """`accelerate` when the fast path is on, else None: what a trainer is given."""
    return accelerate if enabled() else None
