"""Snakemake entry for rule filter_set: filter one synthetic set (synthscale.quality.filtering)."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.data.real import read_manifest
from synthscale.quality.filtering import open_scorer, run_filter

p, wc = snakemake.params, snakemake.wildcards
scorer = open_scorer(
    p.spec,
    snakemake.input.judge,
    p.judge,
    p.image_size,
    p.device,
)
run_filter(
    snakemake.input.shards,
    p.spec,
    wc.filter,
    snakemake.output.shards,
    snakemake.output.counts,
    p.shard_size,
    int(read_manifest(snakemake.input.manifest)["classes"]),
    scorer,
)
