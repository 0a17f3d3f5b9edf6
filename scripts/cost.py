"""Snakemake entry for rule cost: compute hours per grid point from every benchmark file."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.cost_report import write_cost

write_cost(
    snakemake.input.summary,
    snakemake.params.benchmarks,
    snakemake.input.manifest,
    snakemake.output.table,
    snakemake.output.plot,
    snakemake.output.findings,
    snakemake.params.eval_set,
    snakemake.params.images_per_job,  # generation is charged per image a source trains on
)
