"""Snakemake entry for rule train_judge: the real-data classifier that scores synthetic sets."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.classifier.train import train_model, training_parts

parts, n_classes = training_parts([{"split": "train", "limit": None}], snakemake.input.manifest)
# the judge's overrides over the study's full training recipe
recipe = {**snakemake.config["train"], **snakemake.params.recipe}
train_model(
    parts,
    n_classes,
    recipe,
    snakemake.params.seed,
    snakemake.output.model,
    snakemake.output.log,
    device=snakemake.params.device,
)
