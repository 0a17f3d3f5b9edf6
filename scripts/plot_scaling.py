"""Snakemake entry for rule plot_scaling: adapt snakemake.* to synthscale.analysis.scaling_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.scaling_report import write_scaling_plot

i = snakemake.input
write_scaling_plot(i.summary, snakemake.wildcards.metric, snakemake.output[0], i.manifest)
