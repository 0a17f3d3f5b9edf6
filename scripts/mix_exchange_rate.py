"""Snakemake entry for rule mix_exchange_rate: adapt snakemake.* to synthscale.analysis.mixing."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.mixing import write_mix_tables

p, o = snakemake.params, snakemake.output
write_mix_tables(snakemake.input.summary, p.mix, p.seed, o.exchange, o.effects)
