"""Snakemake entry for rule evaluate: adapt snakemake.* to synthscale.train."""
from synthscale.runtime import job_setup
from synthscale.train import evaluate_models

job_setup(snakemake, snakemake.params.threads)
evaluate_models(
    snakemake.input.models,
    snakemake.params.n_labels,
    snakemake.input.manifest,
    snakemake.params.eval_sets,
    snakemake.output.metrics,
    snakemake.output.per_class,
    batch_size=snakemake.params.batch_size,
    device=snakemake.params.device,
)
