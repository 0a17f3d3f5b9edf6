"""Snakemake entry for rule train_classifier: adapt snakemake.* to synthscale.classifier.train."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.classifier.train import run_distributed, run_mix, train_model, training_parts
from synthscale.distributed import run_training
from synthscale.preemption import exit_when_preempted

wc, p = snakemake.wildcards, snakemake.params
# the run's parts (real first, then synthetic), combined by the loader as the mix spec says
parts, n_classes = training_parts(p.parts, snakemake.input.manifest)
spec = dict(
    parts=parts,
    n_classes=n_classes,
    recipe=p.recipe,
    seed=int(wc.seed),
    model_path=snakemake.output.model,
    log_path=snakemake.output.log,
    checkpoint_path=p.checkpoint,
    device=p.device,
    mix=run_mix(parts, p.mix),
)
with exit_when_preempted():  # checkpoint saved: exit 75 (EX_TEMPFAIL); the retry resumes from it
    run_training(train_model, run_distributed, spec, p.gpus, p.threads, p.ddp_spec)
