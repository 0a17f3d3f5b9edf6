"""Snakemake entry for rules quality and filter_quality: every per-set metric of one synthetic set
(generator, guidance, strategy, and its filter when filtered)."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.quality.metrics import measure_set

i, p, wc = snakemake.input, snakemake.params, snakemake.wildcards
measure_set(
    p.quality,
    i.judge,
    i.shards,
    p.n_images,
    i.manifest,
    p.image_size,
    i.reference,
    {"json": snakemake.output.json, "per_class": snakemake.output.per_class},
    seed=p.seed,
    device=p.device,
    classes_csv=i.classes,
    generator=wc.generator,
    guidance=wc.guidance,
    strategy=wc.strategy,
    filter=getattr(wc, "filter", None),  # rule quality's sets have no filter wildcard; filter_quality's do
)
