"""Snakemake entry for rule scaling_fits: adapt snakemake.* to synthscale.analysis.scaling_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.scaling_report import write_scaling_fits

p = snakemake.params
write_scaling_fits(snakemake.input[0], snakemake.output[0], p.metrics, p.target_loss, p.target_top1, p.level)
