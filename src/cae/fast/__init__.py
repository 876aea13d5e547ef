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
- ReLUs work in place; the model runs channels_last.

Setting the environment variable `CAE_FAST=0` turns all of it off (`enabled()`): the trainer
then runs the plain model. `tests/test_fast.py` proves the rewrites equal to the plain model,
forward and backward, in float32 and bfloat16.
"""

from __future__ import annotations

import functools
import os
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
        weight, pad = fold_upsample_weight(self.weight, self.scale)
        bias = self.bias.repeat(self.scale ** 2) if self.bias is not None else None
        return phase_shuffle(nn.functional.conv2d(x, weight, bias, padding=pad), self.scale)


def fold_upsample_weight(weight: torch.Tensor, scale: int) -> tuple[torch.Tensor, int]:
    """Rewrite "nearest-upsample by `scale`, then conv (odd K, 'same')" as one low-resolution conv.

    Output pixel (s*i + a) of the conv reads upsampled pixels s*i + a + d (|d| <= K//2), which are
    low-resolution pixels i + floor((a + d) / s). Summing the taps that land on the same
    low-resolution pixel gives, per output phase (a, b), a small kernel; stacking the s*s phases
    as channels and interleaving them back (`phase_shuffle`) is exactly the original, zero
    padding included. The channels are phase-major (a, b, o), so in channels_last memory the
    interleave copies runs of Co contiguous values. Returns (weight (s*s*Co, Ci, K', K'), padding).
    """
    co, ci, k, _ = weight.shape
    taps, r = _fold_taps(k, scale)
    taps = taps.to(weight.device, weight.dtype)
    w = torch.einsum("aut,bvs,oits->aboiuv", taps, taps, weight)
    return w.reshape(co * scale * scale, ci, 2 * r + 1, 2 * r + 1), r


@functools.lru_cache(maxsize=None)
def _fold_taps(k: int, scale: int) -> tuple[torch.Tensor, int]:
    """taps[a, u, t] = 1 when tap t of output phase a reads low-resolution offset u - r (made
    once per shape: the loop would otherwise run at every training step)."""
    p = k // 2
    r = max(-((-p) // scale), (scale - 1 + p) // scale)
    taps = torch.zeros(scale, 2 * r + 1, k)
    for a in range(scale):
        for t in range(k):
            taps[a, (a + t - p) // scale + r, t] = 1
    return taps, r


def phase_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Interleave phase-major channels (a, b, c) into a `scale` times larger image:
    out[:, c, s*i + a, s*j + b] = x[:, (a*s + b)*C + c, i, j], channels_last."""
    n, sc, h, w = x.shape
    c = sc // (scale * scale)
    y = x.permute(0, 2, 3, 1).reshape(n, h, w, scale, scale, c).permute(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h * scale, w * scale, c).permute(0, 3, 1, 2)


def path() -> Callable[[nn.Module], nn.Module] | None:
    """`accelerate` when the fast path is on, else None: what a trainer is given."""
    return accelerate if enabled() else None
