"""Snakemake entry for rule summary: adapt snakemake.* to synthscale.analysis.tables."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.tables import build_per_class, build_summary, write_table
from synthscale.data.real import read_manifest

p = snakemake.params
n_real = read_manifest(snakemake.input.manifest)["splits"]["train"]["count"]
write_table(
    snakemake.output.summary,
    build_summary(p.sources, snakemake.input.metrics, p.arch, p.ood, n_real),
)
write_table(
    snakemake.output.per_class,
    build_per_class(p.sources, snakemake.input.per_class, p.arch, n_real),
)
