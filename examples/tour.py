# %% [markdown]
# # A tour of `cae`: the handout's questions, answered with the Python API
#
# This notebook walks through the handout's questions in order, with the public API (`import cae`):
#
# 1. the data and the split,
# 2. the reference CAE and its error curve,
# 3. the latent size from the layer formula,
# 4. a few variants against PCA,
# 5. colorization: gray to RGB, then chrominance.
#
# **Quick and full.** As committed, it runs on a stratified subset of 3,000 CIFAR-10 images for
# two epochs per network, a few minutes on two CPU cores: the figures show the method, not the
# answers. For the full version (all 60,000 images, 10 epochs per network: each network then takes
# as long as `cae train --epochs 10`), start Jupyter with `CAE_TOUR_FULL=1` in its environment,
# or set `FULL = True` in the next cell. The finished study's figures are in the README and in the
# report of `cae reproduce`.
#
# The data is read from `CAE_DATA_DIR` (the CIFAR-10 binary folder), else `~/.cache/cae/`, else
# downloaded once. Runs are written under `runs/` beside the notebook; a finished run is not
# trained again when the notebook runs a second time.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import cae

FULL = os.environ.get("CAE_TOUR_FULL") == "1"
LIMIT = 0 if FULL else 3000  # images in the stratified subset (0 = all 60,000)
EPOCHS = 10 if FULL else 2
RUNS = Path("runs/tour-full" if FULL else "runs/tour-quick")


def config(arch: str, **fields) -> cae.RunConfig:
    """A run of this tour: the study's pinned settings (float32, batch 64, peak lr 7e-3)."""
    cfg = cae.RunConfig(arch=arch, **fields)
    cfg.data.limit = LIMIT
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.precision = EPOCHS, 64, 7e-3, "fp32"
    return cfg


def show(rows: list[torch.Tensor], labels: list[str]) -> None:
    """Image rows (each (N, 3, 32, 32) in [0, 1]) as a grid, one label per row."""
    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=(len(rows[0]) * 0.9, len(rows) * 1.0), squeeze=False)
    for r, (images, label) in enumerate(zip(rows, labels)):
        for c, img in enumerate(images):
            axes[r, c].imshow(img.clamp(0, 1).permute(1, 2, 0).numpy())
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    plt.show()


# %% [markdown]
# ## 1. The data and the split
#
# CIFAR-10's 60,000 images (50,000 training, 10,000 test) are pooled and split 80/10/10 into
# training, validation and test sets, stratified by class and seeded, so every run with the same
# seed sees the same split. `cae.split_indices` is the split every run uses; with `limit` it is a
# stratified subset of that size.

# %%
data = cae.load_cifar10()
split = cae.split_indices(data.labels, seed=0, limit=LIMIT)
print(f"{len(data.images):,} images {tuple(data.images.shape[1:])}, classes: {', '.join(data.classes)}")
for name, idx in split.items():
    counts = np.bincount(data.labels[idx].numpy(), minlength=len(data.classes))
    print(f"{name:5s} {len(idx):6,} images, per class {counts.min():,}-{counts.max():,}")

# %% [markdown]
# One test image of each class:

# %%
test = data.images[split["test"]]
test_labels = data.labels[split["test"]]
firsts = [int(torch.nonzero(test_labels == c)[0]) for c in range(len(data.classes))]
show([test[firsts].float() / 255], ["test"])
print(", ".join(data.classes))

# %% [markdown]
# ## 2. The reference CAE and its error curve
#
# The handout's network: three conv layers with two max-pools in the encoder, two up-samplings
# and two convs in the decoder, ReLU inside and a sigmoid at the output. `cae.build_model` gives it
# as plain `torch.nn` layers.

# %%
print(cae.build_model("reference"))

# %% [markdown]
# `cae.train_run` trains it into a run folder (the config, the split, the metrics per epoch, the
# best-validation weights, the test metrics) and returns the test metrics of the best epoch.
# `cae.load_history` reads the error per epoch back: the error curve.

# %%
reference = cae.train_run(config("reference"), RUNS / "reference", progress=False)
history = cae.load_history(RUNS / "reference")
epochs = [r["epoch"] for r in history]
plt.figure(figsize=(5, 3))
plt.plot(epochs, [r["train_loss"] for r in history], "o-", label="training")
plt.plot(epochs, [r["val_mse"] for r in history], "o-", label="validation")
plt.xlabel("epoch"), plt.ylabel("MSE"), plt.xticks(epochs), plt.legend(), plt.title("reference CAE")
plt.show()
print(f"test MSE {reference['mse']:.5f}, PSNR {reference['psnr']:.2f} dB, SSIM {reference['ssim']:.3f}")

# %% [markdown]
# The trained network back from its folder (`cae.load_run`), on the first test images. The
# network sees its input standardized as in training: `task.predict_rgb` does that.

# %%
model, cfg, task = cae.load_run(RUNS / "reference")
x = test[firsts].float() / 255
with torch.no_grad():
    show([x, task.predict_rgb(model, x)], ["original", "reconstruction"])

# %% [markdown]
# ## 3. The latent size from the formula
#
# A convolution maps a W×W input to ((W − K + 2P)/S + 1)² positions per channel, so a layer of C
# channels has C·((W − K + 2P)/S + 1)² values. `cae.trace` applies it layer by layer; the latent
# is the encoder's last output.

# %%
info = cae.trace("reference")
for row in info.trace:
    print(f"{row.stage:8s} {row.layer:22s} {'x'.join(map(str, row.shape)):9s} {row.size:6,}  {row.formula}")
c, w, k, p, s = 16, 8, 3, 1, 1  # the last encoder conv: 16 channels, 8x8 input, 3x3 kernel, padding 1, stride 1
by_hand = c * ((w - k + 2 * p) // s + 1) ** 2
print(f"latent {info.latent_shape} = {info.latent_size:,} values; by hand 16*((8-3+2)/1+1)^2 = {by_hand:,}")
assert by_hand == info.latent_size

# %% [markdown]
# ## 4. A few variants against PCA
#
# Variants change one thing against the reference; here the bottleneck's channels, which sets
# the latent size (`cae sweep architecture` trains the whole study of 19 variants). PCA with k
# components is the best *linear* code of k values: a CAE whose error is above PCA's at the same
# latent size does worse than a linear projection. `cae.fit_pca` fits it on the training images
# and `cae.evaluate_pca` scores it on the test images of the same split, with the same metrics.

# %%
variants = {
    "latent-64": "conv8 pool2 conv12 pool2 conv1 | up2 conv12 up2 convout",
    "latent-256": "conv8 pool2 conv12 pool2 conv4 | up2 conv12 up2 convout",
}
results = {"reference": (cae.trace("reference").latent_size, reference["mse"])}
for name, arch in variants.items():
    metrics = cae.train_run(config(arch), RUNS / name, progress=False)
    results[name] = (cae.trace(arch).latent_size, metrics["mse"])

pca = cae.evaluate_pca(cae.fit_pca(data.images[split["train"]]), test, ks=[16, 32, 64, 128, 256, 512, 1024])
print(f"{'':12s} {'latent':>7s} {'CAE MSE':>9s} {'PCA MSE':>9s}")
for name, (latent, mse) in results.items():
    print(f"{name:12s} {latent:7,} {mse:9.5f} {pca[latent]['mse']:9.5f}")

# %%
plt.figure(figsize=(5, 3.5))
plt.plot(list(pca), [r["mse"] for r in pca.values()], "k--", label="PCA (best linear code)")
for name, (latent, mse) in results.items():
    plt.plot(latent, mse, "o", label=name)
plt.xscale("log", base=2), plt.yscale("log"), plt.xlabel("latent size"), plt.ylabel("test MSE"), plt.legend()
plt.show()

# %% [markdown]
# ## 5. Colorization: gray to RGB, then chrominance
#
# The same kind of network sees only the gray image (the BT.601 luma) and predicts color. First
# it predicts all three RGB channels; then only the chrominance (Cb, Cr), which is merged with
# the given luma, so the brightness is exact and only the color can be wrong. The baselines:
# (a) the gray image itself, (b) gray plus the training set's mean chrominance.

# %%
colorizers = {}
for target in ("rgb", "ycbcr"):
    cfg = config("reference", task="colorize", target=target)
    colorizers[target] = cae.train_run(cfg, RUNS / f"colorize-{target}", progress=False)
baselines = cae.compute_baselines(data.images[split["train"]], test)
rows = {"(a) gray": baselines["a"], "(b) gray + mean chroma": baselines["b"],
        "RGB output": colorizers["rgb"], "chrominance output": colorizers["ycbcr"]}
print(f"{'':24s} {'test MSE':>9s} {'PSNR':>6s}  colorfulness (truth {baselines['a']['colorfulness_truth']:.1f})")
for name, m in rows.items():
    print(f"{name:24s} {m['mse']:9.5f} {m['psnr']:6.2f}  {m['colorfulness']:.1f}")

# %% [markdown]
# The gray input, both colorizers, the colorizer shipped with `cae` (a U-Net trained on the full
# data; `cae.Colorizer.load()`, the one `cae colorize` uses) and the truth:

# %%
predictions = []
with torch.no_grad():
    for target in ("rgb", "ycbcr"):
        model, cfg, task = cae.load_run(RUNS / f"colorize-{target}")
        predictions.append(task.predict_rgb(model, x))
shipped = cae.Colorizer.load(device="cpu")
gray = cae.luma(x).expand(-1, 3, -1, -1)  # what the colorizers see
show([gray, *predictions, torch.stack([shipped(img) for img in x]), x],
     ["gray", "RGB output", "chrominance", "shipped", "truth"])

# %% [markdown]
# ## Next
#
# - `cae reproduce --out runs/reproduce` runs the whole study (the 19 variants, PCA, the
#   colorization runs, a report); `cae reproduce --quick` is its few-minute version.
# - `cae.Colorizer.load().colorize("photo.jpg").save("photo-color.png")` colorizes a photo of
#   any size; `cae serve` does it on a local web page.
# - docs/usage.md lists every command and the Python API.
