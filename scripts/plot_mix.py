"""Snakemake entry for rule plot_mix: adapt snakemake.* to synthscale.analysis.mix_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.mix_report import write_mix_plots

i = snakemake.input
write_mix_plots(i.summary, i.exchange, snakemake.params.mix, i.manifest, snakemake.output)
