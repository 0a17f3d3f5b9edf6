"""Snakemake entry for rule finetune_generator: adapt snakemake.* to synthscale.generation.finetune."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

import sys

from synthscale.data.real import split_shards
from synthscale.generation.finetune import finetune_generator
from synthscale.preemption import Preempted
from synthscale.prompts.strategies import read_prompts

spec = snakemake.params.spec
try:
    finetune_generator(
        snakemake.params.base,
        split_shards(snakemake.input.manifest, "train"),
        [read_prompts(p) for p in snakemake.input.prompts],
        spec["finetune"],
        snakemake.params.seed,
        snakemake.output[0],
        checkpoint_path=snakemake.params.checkpoint,
        device=snakemake.params.device,
        provenance={"generator": spec["name"], "base_spec": spec["base"]},
    )
except Preempted as stop:
    sys.exit(f"preempted: {stop}")
