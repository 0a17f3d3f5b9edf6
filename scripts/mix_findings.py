"""Snakemake entry for rule mix_findings: adapt snakemake.* to synthscale.analysis.mix_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.mix_report import write_mix_findings

i = snakemake.input
write_mix_findings(i.effects, i.exchange, snakemake.params.study, snakemake.output[0])
