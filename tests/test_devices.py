"""The functions that run on the model's device keep their tensors there.

No GPU is here, so this runs them on PyTorch's meta device: like CUDA, it refuses an op that
mixes its tensors with CPU ones (an index or a weight made without `device=`), and it computes
shapes only. Each function below once made such a CPU tensor."""

import torch

from cae.core.color import bin_frequencies
from cae.core.config import RunConfig
from cae.core.model import build_model
from cae.core.photo import _merge_upsampled, _network_output, downscale
from cae.core.tasks import Task
from cae.core.train import bin_prior, mirror, translate

META = torch.device("meta")


def test_a_photo_is_colorized_on_the_model_device() -> None:
    cfg = RunConfig(task="colorize", target="ycbcr", arch="conv8 pool2 | up2 conv2")
    task = Task.from_config(cfg, [0.5], [0.25])
    model = build_model(cfg.arch, task.in_channels, task.out_channels).to(META).eval()
    photo = torch.empty(1, 3, 70, 90, device=META)
    small = downscale(photo, 32)
    chroma = _network_output(model, task, small, stride=2, tile=24, overlap=4)  # in tiles
    assert chroma.device == META and chroma.shape == (1, 2, *small.shape[-2:])
    rgb = _merge_upsampled(torch.empty(1, 1, 70, 90, device=META), chroma, "ycbcr", rows=16)
    assert rgb.device == META and rgb.shape == (1, 3, 70, 90)


def test_colour_bin_statistics_on_the_images_device() -> None:
    images = torch.empty(16, 3, 8, 8, dtype=torch.uint8, device=META)
    assert bin_frequencies(torch.empty(4, 2, 8, 8, device=META), 13).device == META
    assert bin_prior(images, 13, step=2).shape == (169,)


def test_training_augmentations_on_the_images_device() -> None:
    images = torch.empty(6, 3, 8, 8, device=META)
    which = torch.tensor([True, False] * 3)  # drawn on the CPU from the seed, as fit draws them
    offsets = torch.randint(-2, 3, (6, 2))
    assert mirror(images, which).device == META
    assert translate(images, offsets).device == META
