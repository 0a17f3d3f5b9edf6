"""Snakemake entry for rule clip_pairs: adapt snakemake.* to synthscale.clip.pairs.write_clip_pairs."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.clip.pairs import clip_parts, write_clip_pairs
from synthscale.data.real import read_classes, split_shards
from synthscale.study.sources import parse_source

parts = clip_parts(
    parse_source(snakemake.wildcards.clip_source).kind,
    int(snakemake.wildcards.n),
    split_shards(snakemake.input.manifest, "train"),
    list(snakemake.input.data),
    snakemake.params.mix_real_fraction,
)
write_clip_pairs(
    snakemake.output.pairs,
    parts,
    read_classes(snakemake.input.classes),
    snakemake.params.recipe,
    int(snakemake.wildcards.seed),
    snakemake.params.loaders,  # workers x GPUs of the training job: the shard count is a multiple
)
