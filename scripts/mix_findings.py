"""Snakemake entry for rule mix_findings: adapt snakemake.* to synthscale.analysis.mix_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.mix_report import findings, write_findings_html
from synthscale.analysis.mixing import read_rates

lines = findings(read_rates(snakemake.input.effects), read_rates(snakemake.input.exchange))
write_findings_html(lines, snakemake.output[0], f"Real + synthetic: {snakemake.params.study}")
