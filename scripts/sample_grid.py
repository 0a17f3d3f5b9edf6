"""Snakemake entry for rule sample_grid: adapt snakemake.* to synthscale.analysis.quality_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.quality_report import write_sample_grid

wc = snakemake.wildcards
write_sample_grid(snakemake.input.shard, snakemake.input.classes, wc.generator, wc.guidance, wc.strategy,
                  snakemake.output[0])
