"""The fused CPU kernels (cae.kernels) against plain PyTorch: same values, same gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cae import kernels
from cae.arch import phase_shuffle

CL = torch.channels_last


def test_the_extension_builds_here():
    """The machines we measure on have a compiler: a broken build must fail loudly, not fall
    back silently to the slower path."""
    assert kernels.extension() is not None


def _pool_input(dtype: torch.dtype) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, 6).to(dtype)
    x[:, :, :4, :4] = 0.5  # ties: the gradient must go to the first maximum only
    x[:, :, 4:6, :] = -1.0  # windows the ReLU zeroes
    x[0, 0, 0, 0] = 0.0
    return x.contiguous(memory_format=CL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("use_extension", [True, False])
def test_max_pool2_is_relu_of_max_pool2d_values_and_gradients(dtype, relu, use_extension, monkeypatch):
    if not use_extension:
        monkeypatch.setattr(kernels, "extension", lambda: None)
    x = _pool_input(dtype).requires_grad_()
    ref = F.max_pool2d(x, 2)
    ref = F.relu(ref) if relu else ref
    g = torch.randn(ref.shape).to(dtype)
    want, = torch.autograd.grad(ref, x, g)
    y = kernels.max_pool2(x, relu)
    got, = torch.autograd.grad(y, x, g)
    assert torch.equal(y, ref)
    assert torch.equal(got, want)
    with torch.inference_mode():
        assert torch.equal(kernels.max_pool2(x.detach(), relu), ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("activation", ["none", "relu"])
@pytest.mark.parametrize("use_extension", [True, False])
def test_shuffle_activate_is_activation_of_the_interleave(dtype, activation, use_extension, monkeypatch):
    if not use_extension:
        monkeypatch.setattr(kernels, "extension", lambda: None)
    torch.manual_seed(0)
    x = torch.randn(2, 12, 5, 4).to(dtype).contiguous(memory_format=CL).requires_grad_()
    ref = phase_shuffle(x, 2)
    ref = torch.relu(ref) if activation == "relu" else ref
    g = torch.randn(ref.shape).to(dtype)
    want, = torch.autograd.grad(ref, x, g)
    y = kernels.shuffle_activate(x, 2, activation)
    got, = torch.autograd.grad(y, x, g)
    assert torch.equal(y, ref) and torch.equal(got, want)
    assert y.is_contiguous(memory_format=CL) and got.is_contiguous(memory_format=CL)


def test_other_layouts_and_dtypes_take_the_plain_path():
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)  # NCHW float64: not for the kernels
    assert torch.equal(kernels.max_pool2(x, True), F.relu(F.max_pool2d(x, 2)))
    z = torch.randn(2, 8, 3, 3)
    assert torch.equal(kernels.shuffle_activate(z, 2, "relu"), torch.relu(phase_shuffle(z, 2)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
def test_training_loss_is_mse_loss_of_the_float_prediction(dtype, layout):
    from cae.train import mse

    torch.manual_seed(0)
    target = torch.rand(4, 3, 8, 8).contiguous(memory_format=layout)
    pred = torch.rand(4, 3, 8, 8).to(dtype).contiguous(memory_format=layout).requires_grad_()
    want = F.mse_loss(pred.float(), target)
    g_want, = torch.autograd.grad(want, pred)
    got = mse(pred, target)
    g_got, = torch.autograd.grad(got, pred)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    torch.testing.assert_close(g_got, g_want, rtol=1e-2 if dtype == torch.bfloat16 else 1e-6, atol=0)


# ----------------------------------------------------------------------------- uint8 images
def _u8_images(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g).contiguous(memory_format=CL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (2, 3, 5, 3), (3, 1, 7, 5)])  # (2, 3, 5, 3): a partial block
@pytest.mark.parametrize("use_extension", [True, False])
def test_standardize_u8_is_addcmul_of_the_unit_images(dtype, shape, use_extension, monkeypatch):
    if not use_extension:
        monkeypatch.setattr(kernels, "extension", lambda: None)
    x = _u8_images(shape)
    c = shape[1]
    shift = torch.linspace(-2.0, -1.5, c).view(1, c, 1, 1)
    scale = torch.linspace(3.0, 4.5, c).view(1, c, 1, 1)
    want = torch.addcmul(shift, torch.div(x, 255), scale).to(dtype)
    got = kernels.standardize_u8(x, shift, scale, dtype)
    assert got.dtype == dtype and got.shape == x.shape
    assert torch.equal(got, want)  # one rounding to dtype, as in the three-pass original
    assert got.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("clamp", [False, True])
@pytest.mark.parametrize("use_extension", [True, False])
def test_squared_error_against_uint8_images_is_that_against_the_float_images(dtype, clamp, use_extension,
                                                                            monkeypatch):
    from cae.metrics import squared_error_sum

    if not use_extension:
        monkeypatch.setattr(kernels, "extension", lambda: None)
    x = _u8_images((5, 3, 16, 12), seed=1)  # 2,880 values: the last fixed-size chunk is partial
    torch.manual_seed(0)
    p = (torch.rand(x.shape) * 1.2 - 0.1).to(dtype).contiguous(memory_format=CL)  # some outside [0, 1]
    ref_p = p.clamp(0, 1) if clamp else p
    want = torch.sum((ref_p.double() - torch.div(x, 255).double()) ** 2)
    got = squared_error_sum(p, x, clamp=clamp)
    assert got.dtype == torch.float32 and got.dim() == 0
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)
    if clamp:
        return
    # the gradient: 2 (p - x / 255) times the incoming gradient, rounded once to p's dtype
    p.requires_grad_()
    g_got, = torch.autograd.grad(squared_error_sum(p, x) * 0.5, p)
    g_want, = torch.autograd.grad(squared_error_sum(p, torch.div(x, 255)) * 0.5, p)
    assert g_got.dtype == dtype
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=0)


def test_uint8_paths_fall_back_for_other_layouts():
    from cae.metrics import squared_error_sum

    x = _u8_images((2, 3, 4, 4)).contiguous()  # NCHW: not for the kernels
    p = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(squared_error_sum(p, x), torch.sum((p - torch.div(x, 255)) ** 2))
    shift, scale = torch.zeros(3), torch.full((3,), 2.0)
    assert torch.equal(kernels.standardize_u8(x, shift, scale), torch.div(x, 255) * 2)


# ----------------------------------------------------------------------------- first conv + pool
@pytest.mark.parametrize("ci,co,k,size", [(3, 8, 3, (32, 32)), (1, 12, 5, (10, 6)), (3, 5, 7, (8, 12)),
                                          (2, 8, 3, (8, 8))])  # 2 channels: no kernel, the plain path
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("use_extension", [True, False])
def test_conv_pool2_is_max_pool_of_the_conv(ci, co, k, size, relu, use_extension, monkeypatch):
    if not use_extension:
        monkeypatch.setattr(kernels, "extension", lambda: None)
    torch.manual_seed(0)
    x = torch.randn(3, ci, *size).contiguous(memory_format=CL)
    w, b = torch.randn(co, ci, k, k) * 0.3, torch.randn(co) * 0.1
    want = F.max_pool2d(F.conv2d(x, w, b, padding=k // 2), 2)
    want = F.relu(want) if relu else want
    with torch.inference_mode():
        got = kernels.conv_pool2(x, w, b, relu)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        # (a 1-channel input is NCHW to conv2d too, whose output then is NCHW on the plain path)
        assert got.is_contiguous(memory_format=CL) or not (use_extension and ci != 2)
        # bfloat16 autocast: bf16 inputs and weights, float32 sums, one rounding to bf16
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got16 = kernels.conv_pool2(x, w, b, relu)
        want16 = F.max_pool2d(F.conv2d(x.bfloat16().float(), w.bfloat16().float(), b.bfloat16().float(),
                                       padding=k // 2), 2)
        want16 = F.relu(want16) if relu else want16
    assert got16.dtype == torch.bfloat16
    torch.testing.assert_close(got16.float(), want16, rtol=1 / 128, atol=1e-6)  # one bf16 rounding


def test_conv_pool2_with_autograd_is_the_two_step_computation():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=CL)
    w = torch.randn(8, 3, 3, 3, requires_grad=True)
    b = torch.zeros(8, requires_grad=True)
    y = kernels.conv_pool2(x, w, b, True)
    assert y.grad_fn is not None
    (g,) = torch.autograd.grad(y.sum(), w)
    (want,) = torch.autograd.grad(F.relu(F.max_pool2d(F.conv2d(x, w, b, padding=1), 2)).sum(), w)
    torch.testing.assert_close(g, want)


@pytest.mark.filterwarnings("ignore:torch.*is deprecated:DeprecationWarning")
@pytest.mark.parametrize("modern", [True, False])
def test_autocast_dtype_is_read_on_old_and_new_torch(modern):
    """pyproject allows torch>=2.2, which has no torch.get_autocast_dtype (2.4+): the helper then
    reads the per-device functions, with the same answers. (torch.autocast itself needs the
    function on exit, so it is hidden only while the helper is asked.)"""
    def ask(device_type: str) -> torch.dtype:
        with pytest.MonkeyPatch.context() as m:
            if not modern:
                m.delattr(torch, "get_autocast_dtype")
            return kernels._autocast_dtype(device_type, torch.float32)

    assert ask("cpu") == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ask("cpu") == torch.bfloat16
        assert ask("cuda") == torch.float32  # CPU autocast only
