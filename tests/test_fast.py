"""The fast path computes the plain model's function: outputs and gradients, fp32 and bf16."""

from __future__ import annotations

import pytest
import torch

from cae import fast
from cae.core.model import build_model

SPECS = [
    "reference",
    "conv8 pool2 conv12 pool2 conv16 | up2 conv12k5 up2 convout",  # kernel 5 after an upsampling
    "conv8 pool2 conv12 | up2 conv8k7 convout",  # kernel 7: a 4x4 window per phase
    "conv8:gelu pool2 conv16:tanh pool2 | up4 convout",  # gelu is not monotone: must stay before the pool
    "conv8:lrelu pool2 conv12:sigmoid pool4 | up2b conv12 up4 convout",  # pool4, bilinear: untouched paths
    "conv8k5 pool2 conv12:none pool2 | up4 convout",  # a conv without activation before a pool
    "conv8 pool2 res8 fc16:none | fc8s16 res8 up2 conv8 convout",  # residual and dense layers pass through
]
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}
# relative error of a whole gradient tensor: bf16 rounds each layer's output to 8 bits, and the
# two paths sum in different orders, so single elements may differ more than the whole
GRAD_RELATIVE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


def _grads(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        y = model(x)
    y.float().square().sum().backward()
    return y.detach().float(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_accelerated_model_equals_the_plain_model(spec, dtype):
    """Forward and backward of the fast model match the textbook one (bf16: autocast, as training)."""
    torch.manual_seed(0)
    plain = build_model(spec)
    quick = fast.accelerate(plain)
    assert quick.state_dict().keys() == plain.state_dict().keys()
    assert all(a is b for a, b in zip(quick.parameters(), plain.parameters()))  # shared, not copied
    x = torch.rand(4, 3, 32, 32)
    y_plain, g_plain = _grads(plain, x, dtype)
    y_fast, g_fast = _grads(quick, x.contiguous(memory_format=torch.channels_last), dtype)
    torch.testing.assert_close(y_fast, y_plain, **TOLERANCE[dtype])
    for name, a, b in zip([n for n, _ in plain.named_parameters()], g_fast, g_plain):
        assert (a - b).norm() <= GRAD_RELATIVE[dtype] * b.norm(), name


def test_upsample_conv_in_bf16_is_as_close_to_exact_as_the_plain_pair():
    """Under bf16 autocast the plain conv rounds each weight to bf16 once; the folded conv must
    round each sum of taps once too (summed in float32), not round the taps and then the sum,
    which put it ~15% further from the exact result than the plain pair."""
    from torch import nn

    torch.manual_seed(0)
    conv = nn.Conv2d(16, 12, 3, padding=1)
    plain, quick = nn.Sequential(nn.Upsample(scale_factor=2), conv), fast.UpsampleConv2d.of(conv, 2)
    x = torch.randn(8, 16, 8, 8)
    exact = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(16, 12, 3, padding=1)).double()
    exact.load_state_dict(plain.state_dict())
    y_exact = exact(x.double()).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        err_plain, err_fast = ((y.float() - y_exact).norm() for y in (plain(x), quick(x)))
    assert err_fast <= 1.05 * err_plain


def test_the_rewrites_happen_where_they_apply():
    enc, dec = (fast.accelerate(build_model("conv8 pool2 conv8:gelu pool2 | up2 conv8 up2 convout")).encoder,
                fast.accelerate(build_model("reference")).decoder)
    # the ReLU moved behind its pool; GELU is not monotone and stays put
    assert [type(m).__name__ for m in enc] == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "GELU", "MaxPool2d"]
    assert [type(m).__name__ for m in dec] == ["Identity", "UpsampleConv2d", "ReLU", "Identity",
                                               "UpsampleConv2d", "Sigmoid"]


def test_accelerating_leaves_the_plain_model_and_the_random_state_alone():
    torch.manual_seed(0)
    plain = build_model("reference")
    before = [type(m) for m in plain.modules()]
    after_build = torch.rand(3)
    torch.manual_seed(0)
    fast.accelerate(build_model("reference"))
    assert torch.equal(torch.rand(3), after_build)  # skip_init: no extra random draws
    assert [type(m) for m in plain.modules()] == before


def test_phase_interleave_is_pixel_shuffle_in_phase_major_order():
    s, c = 2, 3
    x = torch.randn(2, s * s * c, 5, 4).contiguous(memory_format=torch.channels_last)
    channel_major = x.view(2, s, s, c, 5, 4).permute(0, 3, 1, 2, 4, 5).reshape(2, s * s * c, 5, 4)
    assert torch.equal(fast.PhaseInterleave.apply(x, s, 0, 5, 4), torch.nn.functional.pixel_shuffle(channel_major, s))
    # step 1: phase (a, b) is read a pixels lower and b pixels further right
    y = fast.PhaseInterleave.apply(x, s, 1, 4, 3)
    for a in range(s):
        for b in range(s):
            phase = x[:, (a * s + b) * c:(a * s + b + 1) * c, a:a + 4, b:b + 3]
            assert torch.equal(y[:, :, a::s, b::s], phase)


@pytest.mark.parametrize("k, scale, size", [(1, 2, 1), (3, 2, 2), (5, 2, 3), (7, 2, 4), (3, 3, 3), (3, 4, 3)])
def test_fold_runs_each_phase_on_the_smallest_window(k, scale, size):
    """After up2 a 3x3 conv is a 2x2 conv per output phase (4/9 of the work), which is where the
    fold pays; the fold must also stay exact where no such window exists (plain equality above)."""
    assert fast.fold_plan(k, scale).size == size
    conv = torch.nn.Conv2d(3, 2, k, padding=k // 2).double()
    x = torch.randn(2, 3, 5, 6, dtype=torch.double).contiguous(memory_format=torch.channels_last)
    upsampled = conv(torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest"))
    torch.testing.assert_close(fast.UpsampleConv2d.of(conv, scale)(x), upsampled)


def test_cae_fast_0_turns_the_path_off(monkeypatch):
    monkeypatch.setenv("CAE_FAST", "0")
    assert fast.path() is None
    monkeypatch.setenv("CAE_FAST", "1")
    assert fast.path() is fast.accelerate
