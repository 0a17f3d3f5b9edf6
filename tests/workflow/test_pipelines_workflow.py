"""Diffusers pipelines through Snakemake on the tiny study (configs/test.yaml): SD 1.x, SDXL,
PixArt-alpha, SD3 and Flux (tiny random-weight folders, tests/helpers/tiny_pipelines.py) run through the
study, and a dry run plans one generation job per block of shards. Generation's functions are tested in
tests/unit/test_pipelines.py."""
import pandas as pd
import pytest

from helpers.tiny_pipelines import BUILDERS
from helpers.workflow import dry, new_workdir, smk
from synthscale.data.shards import iter_shards

pytestmark = pytest.mark.workflow


def test_block_jobs_plan_one_job_per_block(tmp_path):
    work = new_workdir(tmp_path / "w")
    counts = dry(work, "results-test/train/resnet18/synthetic/tiny/g1/classname/n400/s0/model.safetensors",
                 overrides={"generation": {"shard_size": 20, "images_per_job": 200}, "n_images": [20, 400]})
    assert counts["generate_block"] == 2  # 20 shards of 20, 10 shards per job


def test_every_pipeline_family_runs_through_the_study(pipeline_folders, tmp_path):
    """SD 1.x, SDXL, PixArt-alpha, SD3 and Flux as pretrained local folders, on the tiny study's grid;
    `generation.sampler: null` keeps each pipeline's own scheduler (flow matching for SD3 and Flux)."""
    work = new_workdir(tmp_path / "study")
    gens = [{"name": n, "kind": "pretrained", "source": str(pipeline_folders[n]), "size": 16} for n in BUILDERS]
    smk(work, "--cores", "2", "results-test/summary.csv",
        overrides={"generators": gens, "generation": {"sampler": None}, "train": {"real_baseline": False}})
    summary = pd.read_csv(work / "results-test/summary.csv")
    synth = summary[summary.kind == "synthetic"]
    assert set(synth["generator"]) == set(BUILDERS)
    assert len(synth) == len(BUILDERS) * 2 * 2 * 2  # generators x guidance x N x eval sets
    for n in BUILDERS:
        shards = sorted((work / f"results-test/synthetic/{n}/g3/classname").glob("shard-*.tar"))
        assert [s.name for s in shards] == ["shard-000000.tar", "shard-000001.tar"]
        img, rec = next(iter_shards(shards[:1]))
        assert img.shape == (16, 16, 3) and rec["generator"] == n and rec["guidance"] == 3.0
