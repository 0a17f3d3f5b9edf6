"""Snakemake entry for rule train_classifier: adapt snakemake.* to synthscale.classifier.train."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.classifier.train import train_run
from synthscale.preemption import exit_when_preempted

p = snakemake.params
with exit_when_preempted():  # checkpoint saved: exit 75 (EX_TEMPFAIL); the retry resumes from it
    train_run(
        p.parts,
        snakemake.input.manifest,
        p.recipe,
        int(snakemake.wildcards.seed),
        snakemake.output.model,
        snakemake.output.log,
        p.checkpoint,
        p.device,
        p.mix,
        p.gpus,
        p.threads,
        p.ddp_spec,
    )
