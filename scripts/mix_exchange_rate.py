"""Snakemake entry for rule mix_exchange_rate: adapt snakemake.* to synthscale.mixing."""
from synthscale.io import write_csv
from synthscale.mixing import exchange_rates, mix_effects, read_summary
from synthscale.runtime import job_setup

job_setup(snakemake)
summary = read_summary(snakemake.input.summary)
write_csv(snakemake.output.exchange, exchange_rates(summary, seed=snakemake.params.seed))
write_csv(snakemake.output.effects, mix_effects(summary, snakemake.params.mix))
