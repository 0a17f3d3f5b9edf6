"""Snakemake entry for rule plot_guidance_strategy: adapt snakemake.* to synthscale.analysis.scaling_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.tables import read_summary
from synthscale.analysis.scaling_report import plot_guidance_strategy

plot_guidance_strategy(read_summary(snakemake.input[0]), snakemake.output[0])
