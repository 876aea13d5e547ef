"""The core: data, the spec language and shape trace, the plain model, the training loop,
metrics, color spaces and run folders. It imports nothing from the layers above it."""
