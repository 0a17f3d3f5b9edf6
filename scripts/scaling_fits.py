"""Snakemake entry for rule scaling_fits: adapt snakemake.* to synthscale.analysis.scaling_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.scaling_report import scaling_fits
from synthscale.analysis.tables import read_summary, write_table

a = snakemake.params.analysis
targets = {"loss": a["target_loss"], "error": None if a["target_top1"] is None else 1 - a["target_top1"]}
fits = scaling_fits(read_summary(snakemake.input[0]), a["metrics"], targets, a["bootstrap"], snakemake.params.seed, a["level"])
write_table(snakemake.output[0], fits)
