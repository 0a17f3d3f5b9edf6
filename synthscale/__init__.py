"""synthscale: scaling laws of synthetic training images."""
