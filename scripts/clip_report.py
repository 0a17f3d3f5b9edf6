"""Snakemake entry for rule clip_report: adapt snakemake.* to synthscale.analysis.clip_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.clip_report import write_clip_report

p = snakemake.params
write_clip_report(
    p.sources, snakemake.input.metrics, p.ood, snakemake.input.manifest, p.reference_set, p.study, snakemake.output
)
