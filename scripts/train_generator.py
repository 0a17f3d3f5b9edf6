"""Snakemake entry for rule train_generator: adapt snakemake.* to synthscale.generation.tinygen."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.generation.tinygen import train_generator_on_split

p = snakemake.params
train_generator_on_split(snakemake.input.manifest, p.channels, snakemake.input.prompts, p.spec, p.seed,
                         snakemake.output[0])
