"""Snakemake entry for rule train_judge: the real-data classifier that scores synthetic sets."""
from synthscale.runtime import job_setup
from synthscale.train import load_training_set, train_classifier

job_setup(snakemake, snakemake.params.threads)
images, labels, n_classes = load_training_set(
    "real", "all", snakemake.input.manifest, [], snakemake.params.image_size
)
train_classifier(
    images,
    labels,
    n_classes,
    snakemake.params.recipe,
    snakemake.params.seed,
    snakemake.output.model,
    snakemake.output.log,
    device=snakemake.params.device,
)
