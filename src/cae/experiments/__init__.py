"""Experiments on top of the core: the architecture study, PCA, colorization, the benchmark."""
