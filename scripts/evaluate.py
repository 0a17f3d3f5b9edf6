"""Snakemake entry for rule evaluate: adapt snakemake.* to synthscale.train."""
from synthscale.runtime import job_setup
from synthscale.train import evaluate_model

job_setup(snakemake, snakemake.params.threads)
evaluate_model(
    snakemake.input.model,
    snakemake.input.manifest,
    snakemake.params.eval_sets,
    snakemake.output.metrics,
    snakemake.output.per_class,
    batch_size=snakemake.params.batch_size,
    device=snakemake.params.device,
)
