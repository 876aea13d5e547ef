"""The device a run uses and its precision, and what the machine is (for speed figures).

CPUs differ in what decides speed: AVX-512, native bf16 (AVX512-BF16) and AMX. `cpu_features`
names them, and every speed figure is reported with them.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator
from pathlib import Path

import torch

from cae.errors import CaeError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is a CaeError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CaeError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise CaeError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's thread count set to `n` inside the block, and restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks of up to 64 MB for reuse instead of unmapping them (CPU runs).

    By default glibc serves large blocks with mmap and gives them back to the OS on free, so the
    multi-MB activations of every batch are page-faulted in again (docs/performance.md has the
    cost). Peak memory does not grow: freed blocks are reused, not added to. Returns whether it
    applied (False off glibc, e.g. macOS); the setting is process-wide, so it is made once.
    """
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, 512 << 20))
    except (OSError, AttributeError):  # not glibc
        return False


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 runs natively (CPU: AVX512-BF16 or AMX; CUDA: Ampere and later)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return bool(cpu or amx)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32.

    'auto' is bf16 autocast where the device runs bf16 natively (CPUs with AVX512-BF16 or AMX,
    CUDA GPUs from Ampere on), else float32; docs/performance.md has the accuracy of each. The
    loss and every metric stay float32. A run records the precision it resolved to, and
    evaluating it later uses that, not what 'auto' means on the evaluating machine.
    """
    if name == "fp32":
        return None
    if name == "auto":
        return torch.bfloat16 if bf16_supported(device) else None
    if not bf16_supported(device):
        raise CaeError(f"--precision bf16 is not supported natively on this {device.type}; use auto or fp32")
    return torch.bfloat16


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_features() -> dict[str, bool]:
    """The instruction-set features that decide the CPU's fast path: AVX2, AVX-512, native bf16
    (AVX512-BF16) and AMX, from /proc/cpuinfo's flags (all False where it cannot be read)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"avx2": "avx2" in flags, "avx512": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "amx": any(f.startswith("amx") for f in flags)}


def describe_cpu() -> str:
    """'MODEL (AVX2, AVX-512, no bf16, no AMX)': the CPU as every speed figure names it."""
    f = cpu_features()
    parts = ["AVX2" if f["avx2"] else "no AVX2", "AVX-512" if f["avx512"] else "no AVX-512",
             "bf16" if f["avx512_bf16"] else "no bf16", "AMX" if f["amx"] else "no AMX"]
    return f"{cpu_model()} ({', '.join(parts)})"
