"""Fused CPU kernels for the chain models, with plain-PyTorch fallbacks.

On CPU, the small convolutions of these models leave much of a step to element-wise passes:
max-pooling with its int64 indices, ReLU, the phase interleave of an upsampling conv and the
activation after it, each with its backward; the division, standardization and cast of the
input images, and the MSE against them. `csrc/kernels.cpp` does each group in one pass over
channels_last float32/bfloat16 tensors (and the uint8 images), and at inference a first
layer's conv with its pool (docs/performance.md has the figures).

The extension is compiled on first use with PyTorch's `cpp_extension` (a C++ compiler and
ninja are needed; ~40 s once, then cached under TORCH_EXTENSIONS_DIR or ~/.cache). Where it
cannot be built, or for CUDA tensors, other layouts and shapes, the same functions run as
plain PyTorch ops, with the same results; `CAE_KERNELS=0` turns the extension off.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F

ACTIVATIONS = {"none": 0, "relu": 1}


@functools.cache
def extension() -> ModuleType | None:
    """The compiled kernels, or None (turned off, or no compiler: one warning says why)."""
    if os.environ.get("CAE_KERNELS", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        src = Path(__file__).with_name("csrc") / "kernels.cpp"
        # AVX2 where PyTorch found it (4x wider than the x86-64 baseline); the name keeps builds
        # for different instruction sets apart in a shared cache
        avx2 = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
        flags = ["-O3", "-fopenmp"] + (["-mavx2", "-mfma", "-mf16c"] if avx2 else [])
        name = "cae_kernels" + ("_avx2" if avx2 else "")
        _say_if_building(name)
        # -fopenmp: at::parallel_for is inline OpenMP; at run time it binds to the libgomp that
        # torch has already loaded (same soname), so both share one thread pool
        return load(name=name, sources=[str(src)], extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as e:  # noqa: BLE001 - any build failure means: use the fallback
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        warnings.warn(f"cae: the fused CPU kernels could not be built ({first}); using plain PyTorch ops, "
                      "which are slower. Install a C++ compiler and ninja, or set CAE_KERNELS=0 to silence this.",
                      RuntimeWarning, stacklevel=2)
        return None


def _say_if_building(name: str) -> None:
    """One line on stderr before a first build, so a 40-second pause is not a mystery."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        folder = Path(_get_build_directory(name, verbose=False))
    except Exception:  # noqa: BLE001 - a private helper; the message is a courtesy
        return
    if not (folder / f"{name}.so").exists():
        print(f"cae: compiling the fused CPU kernels (first use, ~40 s; cached in {folder})", file=sys.stderr)


def _usable(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dim() == 4 and x.dtype in (torch.float32, torch.bfloat16)
            and x.is_contiguous(memory_format=torch.channels_last) and extension() is not None)


# ----------------------------------------------------------------------------- pooling
def max_pool2(x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """2x2 max-pooling with stride 2, then ReLU if `relu`: `relu(max_pool2d(x, 2))` exactly,
    gradient included (ties go to the first maximum in the window, as in `max_pool2d`)."""
    even = x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0
    grad = torch.is_grad_enabled() and x.requires_grad
    if even and _usable(x):
        return _Pool2.apply(x, relu) if grad else extension().pool2_forward(x, relu)
    if even and not grad and x.is_contiguous(memory_format=torch.channels_last):
        # without the kernels: the maximum of row pairs, then of column pairs, of the
        # channels_last values (~2.5x faster than max_pool2d, which also builds indices)
        n, c, h, w = x.shape
        v = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2 * c)
        rows = torch.maximum(v[:, :, 0], v[:, :, 1])
        y = torch.maximum(rows[..., :c], rows[..., c:]).permute(0, 3, 1, 2)
    else:
        y = F.max_pool2d(x, 2)
    return torch.relu(y) if relu else y


class _Pool2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, relu: bool) -> torch.Tensor:  # noqa: ANN001 - autograd's ctx
        ctx.relu = relu
        ctx.save_for_backward(x)
        return extension().pool2_forward(x, relu)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        (x,) = ctx.saved_tensors
        return extension().pool2_backward(grad.contiguous(memory_format=torch.channels_last), x, ctx.relu), None


# ----------------------------------------------------------------------------- first conv + pool
FIRST_CONV_CHANNELS, FIRST_CONV_KERNELS = (1, 3), (3, 5, 7)  # shapes `conv_pool2` has a kernel for


def conv_pool2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool = False) -> torch.Tensor:
    """`max_pool2(conv2d(x, weight, bias, padding='same'), relu)` for inference (no autograd).

    On CPU, for a first layer (1 or 3 input channels, kernel 3, 5 or 7) with even sides, one
    pass computes the conv in float32 registers and keeps only the pooled maxima (oneDNN is slow
    for so few input channels, see csrc/kernels.cpp); the result is rounded once to the
    compute dtype. Under autocast the inputs are cast as autocast would cast them for the conv.
    Otherwise, or for other shapes, it is the two-step computation.
    """
    dtype = _autocast_dtype(x.device.type, x.dtype)
    k = weight.shape[-1]
    if (not torch.is_grad_enabled() or not (x.requires_grad or weight.requires_grad)) and bias is not None \
            and x.shape[1] in FIRST_CONV_CHANNELS and k in FIRST_CONV_KERNELS and weight.shape[-2] == k \
            and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0 and dtype in (torch.float32, torch.bfloat16):
        xc = x.to(dtype)
        if _usable(xc):
            y = extension().conv_pool2_forward(xc, weight.detach().to(dtype), bias.detach().to(dtype), relu)
            if y is not None:
                return y
    return max_pool2(F.conv2d(x, weight, bias, padding=k // 2), relu)


def _autocast_dtype(device_type: str, default: torch.dtype) -> torch.dtype:
    """The dtype autocast computes a conv in on `device_type`, or `default` where it is off."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else default
    if device_type == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else default
    return torch.get_autocast_gpu_dtype() if device_type == "cuda" and torch.is_autocast_enabled() else default


# ----------------------------------------------------------------------------- phase interleave
def interleave(x: torch.Tensor, scale: int) -> torch.Tensor:
    """The plain-PyTorch interleave of phase-major channels (see `cae.arch.phase_shuffle`)."""
    n, sc, h, w = x.shape
    c = sc // (scale * scale)
    y = x.permute(0, 2, 3, 1).reshape(n, h, w, scale, scale, c).permute(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h * scale, w * scale, c).permute(0, 3, 1, 2)


def shuffle_activate(x: torch.Tensor, scale: int, activation: str = "none") -> torch.Tensor:
    """`activation(interleave(x, scale))` in one pass (and one for its backward) where the
    kernels apply; `activation` is 'none' or 'relu'."""
    act = ACTIVATIONS[activation]
    if _usable(x):
        if torch.is_grad_enabled() and x.requires_grad:
            return _Shuffle.apply(x, scale, act)
        return extension().shuffle_forward(x, scale, act)
    y = interleave(x, scale)
    return torch.relu(y) if activation == "relu" else y


class _Shuffle(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: int, act: int) -> torch.Tensor:  # noqa: ANN001
        y = extension().shuffle_forward(x, scale, act)
        ctx.scale, ctx.act = scale, act
        ctx.save_for_backward(y if act else None)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        (y,) = ctx.saved_tensors
        g = grad.contiguous(memory_format=torch.channels_last)
        return extension().shuffle_backward(g, y if y is not None else g, ctx.scale, ctx.act), None, None


# ----------------------------------------------------------------------------- uint8 images
def _u8_batch(x: torch.Tensor) -> bool:
    return x.dtype == torch.uint8 and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def standardize_u8(images: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`(images / 255) * scale + shift` per channel, in `dtype`, for a channels_last uint8 batch:
    the network input straight from the stored images in one pass (the division, the
    standardization and autocast's cast to bfloat16 were three). `shift` and `scale` are float32
    with one value per channel (any shape, e.g. (1, C, 1, 1)). The same values as
    `torch.addcmul(shift, torch.div(images, 255), scale).to(dtype)`, which is the fallback."""
    if (_u8_batch(images) and images.device.type == "cpu" and dtype in (torch.float32, torch.bfloat16)
            and extension() is not None):
        flat = [t.reshape(-1).float().contiguous() for t in (scale, shift)]
        return extension().standardize_u8(images, flat[0], flat[1], dtype == torch.bfloat16)
    c = images.shape[1]
    x = torch.addcmul(shift.reshape(1, c, 1, 1), torch.div(images, 255), scale.reshape(1, c, 1, 1))
    return x.to(dtype)


def squared_error_u8(pred: torch.Tensor, images: torch.Tensor, clamp: bool = False) -> torch.Tensor | None:
    """sum((pred - images / 255)^2) as a float32 scalar (autograd-aware), against uint8 images as
    stored, with `pred` clamped to [0, 1] first if `clamp` (metrics; no gradient then); None
    where the kernels do not apply (the caller takes the plain path)."""
    if not (_usable(pred) and _u8_batch(images) and images.device.type == "cpu" and images.shape == pred.shape):
        return None
    if torch.is_grad_enabled() and pred.requires_grad:
        if clamp:
            return None
        return _SquaredErrorU8.apply(pred, images)
    return torch.tensor(extension().squared_error_u8(pred, images, clamp), dtype=torch.float32)


class _SquaredErrorU8(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred: torch.Tensor, images: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(pred, images)
        return torch.tensor(extension().squared_error_u8(pred, images, False), dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        pred, images = ctx.saved_tensors
        return extension().squared_error_u8_backward(pred, images, 2.0 * float(grad)), None
