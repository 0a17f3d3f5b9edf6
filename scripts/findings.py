"""Snakemake entry for rule findings: adapt snakemake.* to synthscale.analysis.scaling_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.tables import read_scaling, read_summary
from synthscale.data.real import read_manifest
from synthscale.analysis.report import write_html
from synthscale.analysis.scaling_report import scaling_findings

n_classes = read_manifest(snakemake.input.manifest)["classes"]
fits = read_scaling(snakemake.input.scaling)
lines = scaling_findings(read_summary(snakemake.input.summary), fits, n_classes)
write_html(snakemake.output[0], f"Findings: {snakemake.params.study}", lines)
