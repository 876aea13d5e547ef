"""Colour conversions, the chroma merge, and the metric functions against known values."""

import math

import pytest
import torch

from cae.core.color import chroma, gray_rgb, merge_chroma
from cae.core.data import luma
from cae.core.metrics import SoftTargetCrossEntropy, colorfulness, psnr_from_mse, squared_error_sum, ssim_per_image


@pytest.fixture
def rgb() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(8, 3, 16, 16)


def test_luma_is_the_bt601_weighted_sum_in_any_layout() -> None:
    primaries = torch.eye(3).view(3, 3, 1, 1)  # pure red, green, blue images of one pixel
    assert luma(primaries).flatten().tolist() == pytest.approx([0.299, 0.587, 0.114])
    x = torch.rand(4, 3, 5, 6)
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for layout in (torch.contiguous_format, torch.channels_last):
        y = luma(x.contiguous(memory_format=layout))
        assert y.shape == (4, 1, 5, 6) and torch.allclose(y[:, 0], expected, atol=1e-6)
    assert torch.equal(luma(x), luma(x.contiguous(memory_format=torch.channels_last)))
    assert luma(x[0]).shape == (1, 5, 6)  # a single (3, H, W) image


def test_ycbcr_round_trip_is_exact(rgb):
    back = merge_chroma(luma(rgb), chroma(rgb, "ycbcr"), "ycbcr")
    assert (back - rgb).abs().max().item() < 1e-5


def test_lab_round_trip_within_bisection_tolerance(rgb):
    # L* is solved by 16 bisection halvings (0.0015 L*); one L* unit moves RGB by < 0.03,
    # so the round trip is within ~5e-5; 2e-4 leaves room for float32 rounding in kornia
    back = merge_chroma(luma(rgb), chroma(rgb, "lab"), "lab")
    assert (back - rgb).abs().max().item() < 2e-4


@pytest.mark.parametrize("space", ["ycbcr", "lab"])
def test_merge_keeps_the_given_luma(space):
    torch.manual_seed(1)
    y = torch.rand(4, 1, 8, 8) * 0.6 + 0.2  # away from the gamut edges
    pred = 0.5 + (torch.rand(4, 2, 8, 8) - 0.5) * 0.1  # any plausible predicted chroma
    merged = merge_chroma(y, pred, space)
    assert (luma(merged) - y).abs().max().item() < 2e-4


def test_gray_has_neutral_chroma_and_zero_colorfulness():
    y = torch.rand(3, 1, 8, 8)
    g = gray_rgb(y)
    assert torch.allclose(chroma(g, "ycbcr"), torch.full((3, 2, 8, 8), 0.5), atol=1e-6)
    assert colorfulness(g).abs().max().item() == pytest.approx(0.0, abs=1e-4)


def test_colorfulness_of_known_images():
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    # uniform red: rg = 255, yb = 127.5, no spread: M = 0.3 * sqrt(255^2 + 127.5^2)
    assert colorfulness(red).item() == pytest.approx(0.3 * math.hypot(255, 127.5), rel=1e-5)
    half = red.clone()
    half[:, :, :2] = 0.0  # half red, half black: mean and std of rg, yb are both half the values
    expected = 1.3 * math.hypot(127.5, 63.75)
    assert colorfulness(half).item() == pytest.approx(expected, rel=1e-5)


def test_squared_error_sum_is_exact_on_any_thread_count_and_layout():
    """A test split's worth of values (3M per batch of 1,000 images): a float32 dot drifts by
    1e-5 and more with the CPU and the thread count; the sum must match float64 arithmetic."""
    torch.manual_seed(0)
    target = torch.rand(1000, 3, 32, 32)
    pred = target + 0.06 * torch.randn_like(target)
    exact = ((pred.clamp(0, 1).double() - target.double()) ** 2).sum().item()
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for fmt in (torch.contiguous_format, torch.channels_last):
                got = squared_error_sum(pred.contiguous(memory_format=fmt), target, clamp=True).item()
                assert got == pytest.approx(exact, rel=1e-12), (threads, fmt)
    finally:
        torch.set_num_threads(before)


def test_psnr_of_known_mse():
    assert psnr_from_mse(0.01) == pytest.approx(20.0)
    assert psnr_from_mse(1e-3) == pytest.approx(30.0)
    assert psnr_from_mse(0.0) == math.inf


def test_ssim_of_identical_images_is_one(rgb):
    assert torch.allclose(ssim_per_image(rgb, rgb), torch.ones(len(rgb)), atol=1e-5)
    assert (ssim_per_image(rgb, rgb.flip(-1)) < 0.5).all()


def test_ssim_is_the_same_in_any_mix_of_memory_formats(rgb):
    """The fast path's RGB output is NCHW and its batches channels_last: SSIM must not depend on it."""
    pred, target = rgb.flip(-1), rgb
    expected = ssim_per_image(pred, target)
    for fmt_pred in (torch.contiguous_format, torch.channels_last):
        for fmt_target in (torch.contiguous_format, torch.channels_last):
            got = ssim_per_image(pred.contiguous(memory_format=fmt_pred), target.contiguous(memory_format=fmt_target))
            assert torch.equal(got, expected), (fmt_pred, fmt_target)


def _soft_target_ce_by_autograd(logits, idx, w):
    return -(torch.gather(torch.log_softmax(logits, dim=-1), -1, idx) * w).sum(dim=-1).mean()


@pytest.mark.parametrize("weighted", [False, True])
def test_soft_target_cross_entropy_matches_autograd(weighted):
    """The written-out backward gives autograd's gradient of the same formula (double precision,
    so the two orders of summation agree to rounding), with bins shared between a pixel's targets."""
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(2, 3, 5, 9, generator=g, dtype=torch.float64)).requires_grad_()
    idx = torch.randint(0, 9, (2, 3, 5, 4), generator=g)
    idx[..., 1] = idx[..., 0]  # a bin named twice: its weights add up
    w = torch.rand(2, 3, 5, 4, generator=g, dtype=torch.float64)
    w = w / w.sum(dim=-1, keepdim=True) * (torch.rand(2, 3, 5, 1, generator=g, dtype=torch.float64) + 0.5 if weighted else 1)
    loss = SoftTargetCrossEntropy.apply(logits, idx, w)
    (grad,) = torch.autograd.grad(2.5 * loss, logits)
    ref = _soft_target_ce_by_autograd(logits, idx, w)
    (ref_grad,) = torch.autograd.grad(2.5 * ref, logits)
    assert torch.allclose(loss, ref, rtol=1e-12)
    assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(lambda z: SoftTargetCrossEntropy.apply(z, idx, w), (logits,))
