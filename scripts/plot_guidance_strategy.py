"""Snakemake entry for rule plot_guidance_strategy: adapt snakemake.* to synthscale.analysis.scaling_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.scaling_report import write_guidance_plot

write_guidance_plot(snakemake.input[0], snakemake.output[0])
