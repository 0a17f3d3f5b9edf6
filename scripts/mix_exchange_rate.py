"""Snakemake entry for rule mix_exchange_rate: adapt snakemake.* to synthscale.analysis.mixing."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.io import write_csv
from synthscale.analysis.mixing import exchange_rates, mix_effects
from synthscale.analysis.tables import read_summary

summary = read_summary(snakemake.input.summary, fill_seed=False)
write_csv(snakemake.output.exchange, exchange_rates(summary, seed=snakemake.params.seed))
write_csv(snakemake.output.effects, mix_effects(summary, snakemake.params.mix))
