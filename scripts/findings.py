"""Snakemake entry for rule findings: adapt snakemake.* to synthscale.analysis.scaling_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.scaling_report import write_findings
from synthscale.data.real import read_manifest

i = snakemake.input
n_classes = read_manifest(i.manifest)["classes"]
write_findings(i.summary, i.scaling, n_classes, snakemake.params.study, snakemake.output[0])
