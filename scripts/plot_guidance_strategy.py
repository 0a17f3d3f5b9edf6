"""Snakemake entry for rule plot_guidance_strategy: adapt snakemake.* to synthscale.analysis."""
from synthscale.analysis import plot_guidance_strategy, read_summary
from synthscale.runtime import job_setup

job_setup(snakemake)
plot_guidance_strategy(read_summary(snakemake.input[0]), snakemake.output[0])
