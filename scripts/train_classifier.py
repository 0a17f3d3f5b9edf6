"""Snakemake entry for rule train_classifier: adapt snakemake.* to synthscale.train."""
import sys
from pathlib import Path

from synthscale.runtime import job_setup
from synthscale.train import Preempted, load_training_set, train_classifier

job_setup(snakemake, snakemake.params.threads)
wc, cfg = snakemake.wildcards, snakemake.config
images, labels, n_classes = load_training_set(
    wc.source, wc.n, snakemake.input.manifest, snakemake.input.data, cfg["dataset"]["image_size"]
)
try:
    train_classifier(
        images,
        labels,
        n_classes,
        snakemake.params.recipe,
        snakemake.params.seed,
        snakemake.output.model,
        snakemake.output.log,
        checkpoint_path=Path(snakemake.output.model).with_name("checkpoint.pt"),
        device=snakemake.params.device,
    )
except Preempted as stop:
    sys.exit(f"preempted: {stop}")
