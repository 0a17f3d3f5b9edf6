"""Snakemake entry for rule plot_scaling: adapt snakemake.* to synthscale.report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis import read_summary
from synthscale.data import read_manifest
from synthscale.report import plot_scaling

n_classes = read_manifest(snakemake.input.manifest)["classes"]
plot_scaling(
    read_summary(snakemake.input.summary), snakemake.wildcards.metric, snakemake.output[0], 1 / n_classes
)
