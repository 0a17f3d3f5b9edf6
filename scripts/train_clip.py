"""Snakemake entry for rule train_clip: adapt snakemake.* to synthscale.clip."""
import pandas as pd

from synthscale.clip import clip_parts, train_clip
from synthscale.data import split_shards
from synthscale.plan import parse_clip_source
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)
kind, _ = parse_clip_source(snakemake.wildcards.clip_source)
parts = clip_parts(
    kind,
    int(snakemake.wildcards.n),
    split_shards(snakemake.input.manifest, "train"),
    list(snakemake.input.data),
    snakemake.params.mix_real_fraction,
)
train_clip(
    parts,
    pd.read_csv(snakemake.input.classes, dtype={"id": str}, keep_default_na=False),
    snakemake.params.recipe,
    int(snakemake.wildcards.seed),
    snakemake.output.model,
    device=snakemake.params.device,
)
