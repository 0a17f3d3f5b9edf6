"""Snakemake entry for rule filter_report: filtered vs unfiltered sets (synthscale.analysis.filter_report)."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.filter_report import write_filter_report

p = snakemake.params
write_filter_report(p.sources, snakemake.input, p.eval_set, p.cas_n, snakemake.output)
