"""Architecture specs: parsing, the shape trace, parameter counts and every refusal."""

from __future__ import annotations

import pytest
import torch

from cae import arch, kernels
from cae.arch import PRESETS, build_model, expand, parse, trace
from cae.errors import CaeError


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_reference_counts_and_latent():
    info = trace("reference")
    assert info.params == 4911  # the handout's figure
    assert info.latent_shape == (16, 8, 8) and info.latent_size == 1024
    assert n_params(build_model("reference")) == info.params
    assert [r.shape for r in info.trace][-1] == (3, 32, 32)


@pytest.mark.parametrize("spec", [
    "reference",
    "conv8k4s2p1 conv16k2s2p0 | tconv8k2s2 tconvoutk2s2",
    "conv8k5pv pool2 conv16pv pool2 | up2 tconv12k3 up2 tconvoutk5",
    "conv8 pool2 conv12 pool2 conv16:none | up2b conv12:gelu up2b convout:sigmoid",
    "conv4x2 pool2 conv4 | up2 conv4:lrelu convout",
])
def test_trace_matches_the_built_model(spec):
    """The trace's parameter count and output shapes are what the model really has and does."""
    info = trace(spec)
    model = build_model(spec)
    assert n_params(model) == info.params
    x = torch.rand(2, 3, 32, 32)
    assert model.encoder(x).shape[1:] == info.latent_shape
    y = model(x)
    assert y.shape == x.shape
    assert 0 <= y.min() and y.max() <= 1  # the last layer defaults to a sigmoid


def test_token_details():
    enc, dec = parse("conv8k5s1pv pool2 conv12x2:tanh | up2b tconv12k4s2p1 convout", out_channels=2)
    assert (enc[0].kernel, enc[0].stride, enc[0].padding, enc[0].activation) == (5, 1, 0, "relu")
    assert enc[1].kind == "pool" and enc[1].scale == 2
    assert len(enc) == 4 and enc[2] == enc[3] and enc[2].activation == "tanh"  # x2 repetition
    assert dec[0].mode == "bilinear"
    assert (dec[1].kernel, dec[1].stride, dec[1].padding) == (4, 2, 1)
    assert dec[2].channels == 2 and dec[2].activation == "sigmoid"  # convout = task channels, sigmoid default
    assert expand("reference") == PRESETS["reference"].replace("convout", "conv3")


def test_size_formula_in_trace():
    rows = trace("conv8k4s2p1 conv16 | tconv8k2s2 convout").trace
    assert rows[1].shape == (8, 16, 16)  # (32 - 4 + 2*1)/2 + 1 = 16
    assert "16*16" not in rows[1].formula and rows[1].formula.endswith("= 2,048")


@pytest.mark.parametrize("spec, fragment", [
    ("conv8 pool2 dense16 | up2 convout", "cannot read layer 'dense16'"),  # bad token
    ("conv0 pool2 | up2 convout", "zero channel"),  # zero channels
    ("conv8 pool3 | up3 convout", "pool3 does not divide 32x32"),  # pool that does not divide
    ("conv8k3s2p1 | up2 convout", "is not whole"),  # (32-3+2)/2 = 15.5
    ("conv8 pool2 | convout", "decoder returns 3x16x16"),  # decoder wrong shape
    ("conv8:swish pool2 | up2 convout", "unknown activation 'swish'"),
    ("conv8 pool2 up2 convout", "exactly one '|'"),
    ("conv8k4 pool2 | up2 convout", "odd kernel"),
    ("conv8 pool2 | up2", "needs a conv"),
    ("conv8 pool32 pool2 | up2 convout", "pool2 does not divide 1x1"),
])
def test_refusals_name_the_problem(spec, fragment):
    with pytest.raises(CaeError) as e:
        trace(spec)
    assert fragment in str(e.value)
    if "trace" in str(e.value):
        assert "input -> 3x32x32" in str(e.value)  # the message carries the trace so far


def test_colorize_output_channels():
    info = trace("reference", (1, 32, 32), 2)
    assert info.trace[-1].shape == (2, 32, 32)
    with pytest.raises(CaeError, match="decoder returns"):
        trace("conv8 pool2 | up2 conv3", (1, 32, 32), 2)  # an explicit conv3 cannot give 2 channels


@pytest.mark.parametrize("spec", [
    "reference",
    "conv8 pool2 conv12 pool2 conv16 | up2 conv12k5 up2 convout",  # kernel 5 after an upsampling
    "conv8:gelu pool2 conv16:tanh pool2 | up4 convout",  # gelu is not monotone: must stay before the pool
    "conv8:lrelu pool2 conv12:sigmoid pool4 | up2b conv12 up4 convout",  # pool4, bilinear: plain paths
    "conv8k5 pool2 conv12:none pool2 | up4 convout",  # a pool without a ReLU to take over
])
@pytest.mark.parametrize("use_extension", [True, False])
def test_rewritten_model_computes_the_plain_model(spec, use_extension, monkeypatch):
    """The default (rewritten, faster) model and the textbook one agree on outputs and gradients,
    in channels_last and NCHW alike, with the fused kernels and without."""
    if not use_extension:
        monkeypatch.setattr(kernels, "extension", lambda: None)
    torch.manual_seed(0)
    fast, plain = build_model(spec), build_model(spec, plain=True)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(fast.state_dict())
    assert not any(isinstance(m, torch.nn.Identity) for m in plain.modules())  # really the textbook chain
    x = torch.rand(3, 3, 32, 32)
    for layout in (torch.contiguous_format, torch.channels_last):
        f = fast.to(memory_format=layout)
        with torch.inference_mode():
            torch.testing.assert_close(f(x.contiguous(memory_format=layout)), plain(x), rtol=1e-5, atol=1e-6)
        f.zero_grad()
        plain.zero_grad()
        f(x.contiguous(memory_format=layout)).square().sum().backward()
        plain(x).square().sum().backward()
        for (name, a), b in zip(f.named_parameters(), plain.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_monotone_activation_moves_behind_the_pool_and_gelu_does_not():
    enc = build_model("conv8 pool2 conv8:gelu pool2 | up4 convout").encoder
    # the first ReLU moved behind its pool, and both joined the conv (ConvPool2d); GELU stays put
    assert [type(m).__name__ for m in enc] == ["ConvPool2d", "Identity", "Identity", "Conv2d", "GELU", "MaxPool2d"]
    assert enc[0].relu and not enc[5].relu


def test_conv_pool_module_shares_the_parameters_of_the_conv():
    torch.manual_seed(0)
    fast = build_model("reference")
    torch.manual_seed(0)
    plain = build_model("reference", plain=True)
    first = fast.encoder[0]
    assert isinstance(first, arch.ConvPool2d) and isinstance(fast.encoder[3], arch.ConvPool2d)
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in plain.named_parameters()]
    for a, b in zip(fast.parameters(), plain.parameters()):
        assert torch.equal(a, b)  # the same initial draws


def test_fusing_does_not_shift_the_random_state():
    torch.manual_seed(0)
    build_model("reference")
    after_fast = torch.rand(3)
    torch.manual_seed(0)
    build_model("reference", plain=True)
    assert torch.equal(torch.rand(3), after_fast)


def test_relu_after_an_upsampling_conv_is_applied_in_its_interleave():
    dec = build_model("reference").decoder
    assert [type(m).__name__ for m in dec] == ["Identity", "UpsampleConv2d", "Identity", "Identity",
                                               "UpsampleConv2d", "Sigmoid"]
    assert dec[1].activation == "relu" and dec[4].activation == "none"


def test_frozen_folds_compute_the_same_and_follow_weight_changes():
    torch.manual_seed(0)
    model = build_model("conv8 pool2 conv12 pool2 | up2 conv12k5 up2 convout")
    x = torch.rand(2, 3, 32, 32)
    ups = [m for m in model.modules() if isinstance(m, arch.UpsampleConv2d)]
    with torch.inference_mode():
        want = model(x)
        with arch.frozen_folds(model):
            assert all(m.frozen is not None for m in ups)
            assert torch.equal(model(x), want)
        assert all(m.frozen is None for m in ups)  # dropped: training folds at every step
        with torch.no_grad():
            ups[0].weight.mul_(0.5)
        changed = model(x)
        with arch.frozen_folds(model):  # folded again when entered: sees the new weights
            assert torch.equal(model(x), changed)
    assert not torch.equal(changed, want)


def test_phase_shuffle_is_pixel_shuffle_in_phase_major_order():
    s, c = 2, 3
    x = torch.randn(2, s * s * c, 5, 4)
    channel_major = x.view(2, s, s, c, 5, 4).permute(0, 3, 1, 2, 4, 5).reshape(2, s * s * c, 5, 4)
    assert torch.equal(arch.phase_shuffle(x, s), torch.nn.functional.pixel_shuffle(channel_major, s))
