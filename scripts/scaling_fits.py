"""Snakemake entry for rule scaling_fits: adapt snakemake.* to synthscale.analysis."""
from synthscale.analysis import read_summary, scaling_fits, write_table
from synthscale.runtime import job_setup

job_setup(snakemake)
write_table(snakemake.output[0], scaling_fits(read_summary(snakemake.input[0])))
