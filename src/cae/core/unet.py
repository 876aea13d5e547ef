"""A small U-Net for colorization (architecture spec `unetW`, e.g. `unet16`).

Three encoder levels (conv 3x3 + group norm + ReLU, then 2x2 max-pooling), a bottleneck
conv at 1/8 of the input side, and three decoder levels (bilinear 2x upsampling, concatenation
with the encoder's output of the same size, conv 3x3 + group norm + ReLU), then a 1x1 conv
with a sigmoid. Channels: W, 2W, 4W down; 4W at the bottleneck; 2W, W, W up.

Group norm, not batch norm: its statistics are per image, so training in several processes
(each seeing a shard of the batch) computes exactly what one process does, and evaluation
needs no running averages.

With a square number K*K > 3 of output channels the head is a classifier instead: logits over
the K x K chroma bins of `cae.color.chroma_bins`, trained with cross-entropy. In training mode
`forward` returns the logits; in eval mode the annealed mean of Zhang et al. (2016) at the
`temperature` buffer: softmax(logits / T) averaged over the bin centres (T = 1: the
distribution's mean; smaller T moves towards its mode). Before that, `boost` * `log_weights` may
be added to the logits: the predicted distribution reweighted by Zhang et al.'s class-rebalancing
weights at decoding time (a prior correction: rare, saturated bins gain in proportion to the
probability the net already gives them, so unsure pixels stay near the mean). Last, `spread`
(color.spread) may widen each image's chroma around its own mean colour.

Not an autoencoder in the strict sense: the skip connections carry full-resolution features
from the encoder straight to the decoder, bypassing the bottleneck, so the bottleneck does not
limit what reaches the output. Its "latent" (reported by `info`) is only the deepest feature
map, which gives the net its context (receptive field of about 50 pixels, the whole CIFAR-10
image), which is what colorization needs: the colour of a region depends on what it is.
Sides must be divisible by 8 (three poolings); `cae.core.photo.predict` pads other sizes.

`chroma_gain` (a buffer saved with the weights, not learned, 1 during training) scales the
output's distance from 0.5, i.e. from gray for a chroma target: an MSE-trained colorizer
predicts the conditional mean colour, which is desaturated, and `cae.experiments.colorization` calibrates
this gain on the validation split after training to give some saturation back.
"""

from __future__ import annotations

import torch
from torch import nn

from cae.core.color import chroma_bins
from cae.core.spec import UNET_LEVELS, class_grid, unet_channels
from cae.errors import CaeError

STRIDE = 2 ** UNET_LEVELS  # three poolings


CLASS_POOL = 2  # a classifier's logits are at 1/CLASS_POOL of the input side
GROUP = 4  # channels per normalization group (widths are multiples of 4 for unet4 and up)


def _block(in_c: int, out_c: int) -> nn.Sequential:
    # a normalization lets a deeper net train quickly at a high learning rate; group norm's
    # statistics are per image, so it behaves the same in one process, in many, and at eval
    groups = max(1, out_c // GROUP) if out_c % GROUP == 0 else 1
    return nn.Sequential(nn.Conv2d(in_c, out_c, 3, padding=1, bias=False), nn.GroupNorm(groups, out_c),
                         nn.ReLU(inplace=True))


class UNet(nn.Module):
    """U-Net of width `width`: `encoder` (list of levels), `bottleneck`, `decoder` (list), `head`."""

    def __init__(self, in_channels: int = 1, out_channels: int = 2, width: int = 16):
        super().__init__()
        if width < 1:
            raise CaeError(f"the U-Net width must be at least 1, got {width}")
        self.in_channels, self.out_channels, self.width = in_channels, out_channels, width
        enc_c, dec_c = unet_channels(width)  # W, 2W, 4W down; 2W, W, W up
        self.encoder = nn.ModuleList(_block(c_in, c) for c_in, c in zip([in_channels, *enc_c[:-1]], enc_c))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _block(enc_c[-1], enc_c[-1])
        ins = [enc_c[-1] + enc_c[-1], *(d + s for d, s in zip(dec_c[:-1], enc_c[-2::-1]))]
        self.decoder = nn.ModuleList(_block(c_in, c) for c_in, c in zip(ins, dec_c))
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        k = class_grid(out_channels)
        # a classifier predicts at half resolution, like Zhang et al. (a quarter there): chroma
        # tolerates it, and the softmax over Q bins per pixel is most of a training step's cost
        self.head = nn.Sequential(nn.AvgPool2d(CLASS_POOL), nn.Conv2d(dec_c[-1], out_channels, 1)) if k else \
            nn.Sequential(nn.Conv2d(dec_c[-1], out_channels, 1), nn.Sigmoid())
        self.register_buffer("chroma_gain", torch.ones(()))
        if k:  # the classifier's decoding: bin centres (not learned) and the calibrated temperature
            self.register_buffer("centres", chroma_bins(k))
            self.register_buffer("temperature", torch.ones(()))
            self.register_buffer("bin_weights", torch.ones(out_channels))  # class rebalancing, set by training
            # decoding-time rebalancing: logits + boost * log_weights (set by the calibration)
            self.register_buffer("log_weights", torch.zeros(out_channels))
            self.register_buffer("boost", torch.zeros(()))
            # color.spread: a setting of the run's config (set on load), not saved with the weights
            self.register_buffer("spread", torch.ones(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.raw(x)
        if hasattr(self, "centres"):
            if self.training:
                return y  # logits, for the cross-entropy loss
            y = nn.functional.interpolate(self.decode(y), scale_factor=CLASS_POOL, mode="bilinear",
                                          align_corners=False)
        # fixed saturation gain around 0.5 (gray chroma); exactly the head's output while it is 1
        return y if self.chroma_gain.item() == 1.0 else 0.5 + self.chroma_gain.to(y.dtype) * (y - 0.5)

    def decode(self, logits: torch.Tensor, boost: float | None = None, temperature: float | None = None) -> torch.Tensor:
        """A classifier's chroma (N,2,h,w) at the logits' resolution: the annealed mean of the
        logits rebalanced by `boost` at `temperature` (default: the buffers'), then each image's
        chroma spread around its own mean by the `spread` buffer."""
        boost = self.boost.item() if boost is None else boost
        y = logits.float() + boost * self.log_weights.view(1, -1, 1, 1) if boost else logits
        c = annealed_mean(y, self.centres, self.temperature.item() if temperature is None else temperature)
        if self.spread.item() == 1.0:
            return c
        mean = c.mean(dim=(2, 3), keepdim=True)
        return mean + self.spread * (c - mean)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The head's output before any decoding: a classifier's logits, else the sigmoid's chroma."""
        if x.shape[-1] % STRIDE or x.shape[-2] % STRIDE:
            raise CaeError(f"the U-Net needs sides divisible by {STRIDE}, got {x.shape[-2]}x{x.shape[-1]}")
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for level, skip in zip(self.decoder, reversed(skips)):
            x = level(torch.cat([self.up(x), skip], dim=1))
        return self.head(x)  # a classifier's logits are at 1/CLASS_POOL of the side


def annealed_mean(logits: torch.Tensor, centres: torch.Tensor, temperature: float) -> torch.Tensor:
    """Chroma (N,2,H,W): the bin centres (Q,2) averaged under softmax(logits / temperature)."""
    p = torch.softmax(logits.float() / temperature, dim=1)
    # a 1x1 convolution with the centres as weights: the expectation at every pixel in one pass
    return nn.functional.conv2d(p, centres.t().reshape(2, -1, 1, 1).to(p.dtype))
