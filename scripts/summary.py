"""Snakemake entry for rule summary: adapt snakemake.* to synthscale.analysis.tables."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.tables import write_summaries

p, i, o = snakemake.params, snakemake.input, snakemake.output
write_summaries(p.sources, i.metrics, i.per_class, p.arch, p.ood, i.manifest, o.summary, o.per_class)
