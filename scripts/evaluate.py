"""Snakemake entry for rule evaluate: adapt snakemake.* to synthscale.classifier.evaluate."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.classifier.evaluate import evaluate_models

evaluate_models(
    snakemake.input.models,
    snakemake.params.n_labels,
    snakemake.params.seeds,
    snakemake.input.manifest,
    snakemake.params.eval_sets,
    snakemake.output.metrics,
    snakemake.output.per_class,
    recipe=snakemake.params.recipe,
    batch_size=snakemake.params.batch_size,
    device=snakemake.params.device,
    num_workers=snakemake.params.workers,
)
