"""Snakemake entry for rule finetune_generator: adapt snakemake.* to synthscale.generation.finetune."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.generation.finetune import finetune_run
from synthscale.preemption import exit_when_preempted

p = snakemake.params
with exit_when_preempted():  # checkpoint saved: exit 75 (EX_TEMPFAIL); the retry resumes from it
    finetune_run(
        p.base,
        snakemake.input.manifest,
        snakemake.input.prompts,
        p.spec,
        p.seed,
        snakemake.output[0],
        p.checkpoint,
        p.device,
        p.gpus,
        p.threads,
        p.ddp_spec,
    )
