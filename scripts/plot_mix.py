"""Snakemake entry for rule plot_mix: adapt snakemake.* to synthscale.analysis.mix_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.data.real import read_manifest
from synthscale.analysis.mix_report import plot_augmentation, plot_exchange, plot_scarce_real
from synthscale.analysis.mixing import read_rates
from synthscale.analysis.tables import read_summary

chance = 1 / read_manifest(snakemake.input.manifest)["classes"]
summary = read_summary(snakemake.input.summary, fill_seed=False)
out = snakemake.output
plot_scarce_real(summary, snakemake.params.mix, out.scarce, chance)
plot_augmentation(summary, out.augment, chance)
plot_exchange(read_rates(snakemake.input.exchange), out.exchange)
