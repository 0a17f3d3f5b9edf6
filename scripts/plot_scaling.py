"""Snakemake entry for rule plot_scaling: adapt snakemake.* to synthscale.analysis.scaling_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.tables import read_summary
from synthscale.data.real import read_manifest
from synthscale.analysis.scaling_report import plot_scaling

n_classes = read_manifest(snakemake.input.manifest)["classes"]
plot_scaling(
    read_summary(snakemake.input.summary), snakemake.wildcards.metric, snakemake.output[0], 1 / n_classes
)
