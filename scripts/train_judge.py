"""Snakemake entry for rule train_judge: adapt snakemake.* to synthscale.quality.judge.train_judge."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.quality.judge import train_judge

p, out = snakemake.params, snakemake.output
train_judge(snakemake.input.manifest, p.recipe, p.seed, out.model, out.log, device=p.device)
