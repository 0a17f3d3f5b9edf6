"""Snakemake entry for rules quality and filter_quality: every per-set metric of one synthetic set
(generator, guidance, strategy, and its filter when filtered)."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.data.real import read_manifest
from synthscale.quality.metrics import measure_synthetic

wc = snakemake.wildcards
measure_synthetic(
    snakemake.params.quality,
    snakemake.input.judge[0] if snakemake.input.judge else None,
    snakemake.input.shards,
    snakemake.params.n_images,
    int(read_manifest(snakemake.input.manifest)["classes"]),
    snakemake.params.image_size,
    snakemake.input.reference,
    {"json": snakemake.output.json, "per_class": snakemake.output.per_class},
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    classes_csv=snakemake.input.classes,
    # a filtered set (rule filter_quality) also records its filter
    extra={"generator": wc.generator, "guidance": float(wc.guidance), "strategy": wc.strategy}
    | ({"filter": wc.filter} if getattr(wc, "filter", None) else {}),
)
