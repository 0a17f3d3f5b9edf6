"""Snakemake entry for rule clip_pairs: adapt snakemake.* to synthscale.clip.pairs.make_clip_pairs."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.clip.pairs import make_clip_pairs
from synthscale.study.sources import parse_source

wc = snakemake.wildcards
make_clip_pairs(
    snakemake.output.pairs,
    parse_source(wc.clip_source).kind,  # the one grammar of source names
    int(wc.n),
    snakemake.input.manifest,
    snakemake.input.data,
    snakemake.input.classes,
    snakemake.params.mix_real_fraction,
    snakemake.params.recipe,
    int(wc.seed),
    snakemake.params.loaders,  # workers x GPUs of the training job: the shard count is a multiple
)
