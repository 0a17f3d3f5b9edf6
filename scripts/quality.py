"""Snakemake entry for rules quality and filter_quality: every per-set metric of one synthetic set
(generator, guidance, strategy, and its filter when filtered)."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.data.real import read_manifest
from synthscale.quality.metrics import measure_synthetic, set_fields

wc = snakemake.wildcards
measure_synthetic(
    snakemake.params.quality,
    snakemake.input.judge,
    snakemake.input.shards,
    snakemake.params.n_images,
    int(read_manifest(snakemake.input.manifest)["classes"]),
    snakemake.params.image_size,
    snakemake.input.reference,
    {"json": snakemake.output.json, "per_class": snakemake.output.per_class},
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    classes_csv=snakemake.input.classes,
    # rule quality's sets have no filter wildcard; rule filter_quality's do
    extra=set_fields(wc.generator, wc.guidance, wc.strategy, getattr(wc, "filter", None)),
)
