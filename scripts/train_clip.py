"""Snakemake entry for rule train_clip: adapt snakemake.* to synthscale.clip.train."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

import sys

from synthscale.clip.train import train_clip
from synthscale.preemption import PREEMPTED_EXIT, Preempted

try:
    train_clip(
        snakemake.input.pairs,
        snakemake.params.recipe,
        int(snakemake.wildcards.seed),
        snakemake.output.model,
        device=snakemake.params.device,
        gpus=snakemake.params.gpus,  # > 1: torchrun --standalone, one rank a GPU
        threads=snakemake.params.threads,
    )
except Preempted as stop:  # a signal stopped the launched training: exit 75; the retry resumes
    print(f"preempted: {stop}", file=sys.stderr, flush=True)
    sys.exit(PREEMPTED_EXIT)
