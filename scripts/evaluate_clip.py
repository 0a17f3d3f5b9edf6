"""Snakemake entry for rule evaluate_clip: adapt snakemake.* to synthscale.clip.evaluate."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.clip.evaluate import evaluate_clip_models

evaluate_clip_models(
    snakemake.input.models,
    snakemake.params.n_labels,
    snakemake.params.seeds,
    snakemake.input.manifest,
    snakemake.input.classes,
    snakemake.params.eval_sets,
    snakemake.output.metrics,
    template_set=snakemake.params.templates,
    batch_size=snakemake.params.batch_size,
    device=snakemake.params.device,
)
