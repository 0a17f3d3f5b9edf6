"""Snakemake entry for rule train_classifier: adapt snakemake.* to synthscale.classifier.train."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.classifier.train import run_distributed, train_model, training_parts
from synthscale.preemption import exit_when_preempted

wc = snakemake.wildcards
# the run's parts (real first, then synthetic), combined by the loader as the mix spec says
parts, n_classes = training_parts(snakemake.params.parts, snakemake.input.manifest)
spec = dict(
    parts=parts,
    n_classes=n_classes,
    recipe=snakemake.params.recipe,
    seed=int(wc.seed),
    model_path=snakemake.output.model,
    log_path=snakemake.output.log,
    checkpoint_path=snakemake.params.checkpoint,
    device=snakemake.params.device,
    mix=snakemake.params.mix if len(parts) > 1 else None,
)
with exit_when_preempted():  # checkpoint saved: exit 75 (EX_TEMPFAIL); the retry resumes from it
    if snakemake.params.gpus > 1:  # one torchrun rank per GPU (DDP)
        run_distributed({**spec, "threads": snakemake.params.threads}, snakemake.params.gpus, snakemake.params.ddp_spec)
    else:
        train_model(**spec)
