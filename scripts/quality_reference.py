"""Snakemake entry for rule quality_reference: the real reference set through the judge, once."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.quality.metrics import measure_reference

measure_reference(
    snakemake.params.quality,
    snakemake.input.judge,
    snakemake.input.manifest,
    snakemake.params.image_size,
    snakemake.params.n_images,
    {k: snakemake.output[k] for k in ("npz", "json", "per_class")},
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    classes_csv=snakemake.input.classes,
)
