"""Architecture specs: parsing, the shape trace, parameter counts and every refusal; the plain
model built from a spec is the spec's layer list."""

from __future__ import annotations

import pytest
import torch

from cae.core.model import build_model
from cae.core.spec import PRESETS, expand, parse, trace
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
    "conv8k4s2p1 res8x2 pool2 fc16:none | fc8s8 res8 up2 up2 convout",  # residual blocks, dense bottleneck
    "conv4 pool2 fc32:none | fc3s32",  # a dense decoder
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
    ("conv8 res16 | convout", "res16:relu needs 16 input channels, got 8"),  # a residual must keep channels
    ("conv8 res8k5 | convout", "takes no kernel"),
    ("conv8 fc16p1 | fc8s32 convout", "takes no kernel"),
    ("conv8 fc16 | fc8s16 convout", "decoder returns 3x16x16"),  # fc reshapes to what it is told
    ("conv64 fc4096 | fc3s32", "needs 268,435,456 weights"),  # a dense layer on a full-size map
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


def test_the_reference_model_is_the_handouts_layer_list():
    """Plain torch.nn modules in the handout's order, nothing rewritten."""
    model = build_model("reference")
    names = [type(m).__name__ for m in (*model.encoder, *model.decoder)]
    assert names == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU",
                     "Upsample", "Conv2d", "ReLU", "Upsample", "Conv2d", "Sigmoid"]
    assert [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)] == [8, 12, 16, 12, 3]
    assert model.encoder(torch.rand(2, 3, 32, 32)).shape == (2, 16, 8, 8)


def test_receptive_field_follows_the_layers():
    from cae.core.model import receptive_field

    assert receptive_field("conv8 | convout") == 5  # two 3x3 convs
    assert receptive_field("conv8k5 | convout") == 7
    assert receptive_field("reference") == 26  # 3x3 convs through two poolings and two upsamplings
    assert receptive_field("conv8 pool2 conv8 | up2 convout") > receptive_field("conv8 conv8 | convout")


def test_dense_bottleneck_makes_any_latent_size():
    """fcN in the encoder is an N-value code whatever the spatial size; fcCsS in the decoder
    reshapes it; the trace carries the size formula and the Linear's parameters."""
    info = trace("conv8 pool2 fc24:none | fc8s16 up2 convout")
    assert info.latent_shape == (24, 1, 1) and info.latent_size == 24
    fc = info.trace[3]
    assert fc.params == 8 * 16 * 16 * 24 + 24 and fc.formula == "24*1^2 = 24"
    model = build_model("conv8 pool2 fc24:none | fc8s16 up2 convout")
    names = [type(m).__name__ for m in model.encoder]
    assert names == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear", "Unflatten"]  # :none adds no activation


def test_residual_block_adds_its_input():
    """A res block with zeroed second conv is the identity, then its activation."""
    from cae.core.model import Residual

    block = Residual(4)
    torch.nn.init.zeros_(block.conv2.weight)
    torch.nn.init.zeros_(block.conv2.bias)
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(block(x), x)
    model = build_model("conv4 res4:none | convout")
    assert isinstance(model.encoder[2], Residual) and len(model.encoder) == 3
