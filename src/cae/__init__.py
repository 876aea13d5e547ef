"""cae: convolutional autoencoders on images (CIFAR-10 reconstruction, architecture study,
colorization). The public API is re-exported here; the CLI (`cae`) is a thin shell over it."""

from cae.errors import CaeError

__version__ = "0.1.0"
__all__ = ["CaeError", "__version__"]
