"""Shared fixtures: pinned threads (bit-identical reruns) and small real data."""
import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_16():
    """sklearn's digits at 16x16, grey (N, 16, 16, 1) uint8, with labels."""
    from synthscale.data import load_digits_images

    return load_digits_images(16)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
