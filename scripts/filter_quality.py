"""Snakemake entry for rule filter_quality: the quality metrics of one filtered synthetic set."""
from synthscale.data import read_manifest
from synthscale.quality_metrics import measure_synthetic
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)
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
    extra={
        "generator": wc.generator,
        "guidance": float(wc.guidance),
        "strategy": wc.strategy,
        "filter": wc.filter,
    },
)
