"""Snakemake entry for rule filter_set: filter one synthetic set (synthscale.quality.filtering)."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.quality.filtering import filter_one_set

p = snakemake.params
filter_one_set(
    snakemake.input.shards,
    p.spec,
    snakemake.wildcards.filter,
    snakemake.output.shards,
    snakemake.output.counts,
    p.shard_size,
    snakemake.input.manifest,
    snakemake.input.judge,
    p.judge,
    p.image_size,
    p.device,
)
