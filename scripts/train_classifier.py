"""Snakemake entry for rule train_classifier: adapt snakemake.* to synthscale.train."""
import sys
from pathlib import Path

from synthscale.mixing import load_mixed_training_set
from synthscale.runtime import job_setup
from synthscale.train import Preempted, train_classifier

job_setup(snakemake, snakemake.params.threads)
cfg = snakemake.config
# the run's parts (real first, then synthetic) combined as the mix spec says; the streaming loader
# (synthscale.loader.build_train_loader(parts, recipe, seed, epoch, mix=...)) takes the same two
images, labels, n_classes = load_mixed_training_set(
    snakemake.params.parts,
    snakemake.input.manifest,
    cfg["dataset"]["image_size"],
    snakemake.params.mix,
    snakemake.params.seed,
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
