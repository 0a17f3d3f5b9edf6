"""Snakemake entry for rule plot_scaling: adapt snakemake.* to synthscale.analysis.scaling_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.scaling_report import write_scaling_plot
from synthscale.data.real import read_manifest

n_classes = read_manifest(snakemake.input.manifest)["classes"]
write_scaling_plot(snakemake.input.summary, snakemake.wildcards.metric, snakemake.output[0], n_classes)
