"""Experiments on top of the core: the architecture study, PCA, colorization (the study, real
photos, the decoding trade-off), the benchmark."""
