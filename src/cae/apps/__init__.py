"""Applications of trained models: colorizing photos, the local web page."""
