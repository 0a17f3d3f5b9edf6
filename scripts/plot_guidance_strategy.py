"""Snakemake entry for rule plot_guidance_strategy: adapt snakemake.* to synthscale.report."""
from synthscale.analysis import read_summary
from synthscale.report import plot_guidance_strategy
from synthscale.runtime import job_setup

job_setup(snakemake)
plot_guidance_strategy(read_summary(snakemake.input[0]), snakemake.output[0])
