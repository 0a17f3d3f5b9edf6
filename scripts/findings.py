"""Snakemake entry for rule findings: adapt snakemake.* to synthscale.analysis.scaling_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.scaling_report import write_findings

i = snakemake.input
write_findings(i.summary, i.scaling, i.manifest, snakemake.params.study, snakemake.output[0])
