"""Shared fixtures for tests/unit and tests/workflow: pinned threads (bit-identical reruns), small real
data, tiny random-weight diffusers pipelines and prompt models as local folders (a stage's unit tests and
its Snakemake run both load them), and one local run of the tiny study (configs/test.yaml) that the
workflow and SLURM tests both read. The helpers the tests import live in tests/helpers
(`require_or_skip`, which turns a missing system requirement into a failure when SYNTHSCALE_REQUIRE
names it (CI: .ci/run), is in helpers/require.py; `smk` and `new_workdir` in helpers/workflow.py)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.workflow import new_workdir, smk

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_16():
    """sklearn's digits at 16x16, grey (N, 16, 16, 1) uint8, with labels."""
    from synthscale.data.real import load_digits_images

    return load_digits_images(16)


@pytest.fixture(scope="session")
def pipeline_folders(tmp_path_factory) -> dict[str, Path]:
    """Every diffusers family of helpers/tiny_pipelines.BUILDERS as a local folder: {family: folder}."""
    from helpers.tiny_pipelines import build_families

    return build_families(tmp_path_factory.mktemp("pipes"))


@pytest.fixture(scope="session")
def tiny_prompt_models(tmp_path_factory) -> dict[str, Path]:
    """The tiny T5, GPT-2 and BLIP of helpers/tiny_prompt_models.py as local folders."""
    from helpers.tiny_prompt_models import build_prompt_models

    return build_prompt_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def default_raw():
    """The repository's config.yaml as parsed YAML, before validation (tests copy it before changing it)."""
    import yaml

    with open("config.yaml") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    """A Stable Diffusion 1.x pipeline with random weights, saved as safetensors like a Hub checkpoint."""
    from helpers.tiny_pipelines import build_sd

    return build_sd(tmp_path_factory.mktemp("sd") / "tiny-sd", text_layers=1)


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Path:
    """The tiny study, run once locally on 2 cores; tests must not change its files."""
    work = new_workdir(tmp_path_factory.mktemp("study"))
    smk(work, "--cores", "2")
    return work


@pytest.fixture
def one_thread():
    """One torch thread for the test (bit-identical reruns), restored afterwards."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
