"""Snakemake entry for rule train_clip: adapt snakemake.* to synthscale.clip.train."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.clip.train import train_clip
from synthscale.preemption import exit_when_preempted

with exit_when_preempted():  # a signal stopped the launched training: exit 75; the retry resumes
    train_clip(
        snakemake.input.pairs,
        snakemake.params.recipe,
        int(snakemake.wildcards.seed),
        snakemake.output.model,
        config_path=snakemake.output.config,
        work_dir=snakemake.params.work,  # open_clip's logs and checkpoints: a rerun resumes from them
        log_path=snakemake.params.train_log,
        device=snakemake.params.device,
        gpus=snakemake.params.gpus,  # > 1: torchrun --standalone, one rank a GPU
        threads=snakemake.params.threads,
    )
