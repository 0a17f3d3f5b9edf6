"""Snakemake entry for rule train_classifier: adapt snakemake.* to synthscale.train."""
import sys
from pathlib import Path

from synthscale.runtime import job_setup
from synthscale.train import Preempted, run_distributed, train_model, training_parts

job_setup(snakemake, snakemake.params.threads)
wc = snakemake.wildcards
parts, n_classes = training_parts(wc.source, wc.n, snakemake.input.manifest, snakemake.input.data)
out = Path(snakemake.output.model)
spec = dict(
    parts=parts,
    n_classes=n_classes,
    recipe=snakemake.params.recipe,
    seed=int(wc.seed),
    model_path=str(out),
    log_path=snakemake.output.log,
    checkpoint_path=str(out.with_name("checkpoint.pt")),
    device=snakemake.params.device,
)
try:
    if snakemake.params.gpus > 1:
        spec["threads"] = snakemake.params.threads
        run_distributed(spec, snakemake.params.gpus, out.with_name("ddp_spec.json"))
    else:
        train_model(**spec)
except Preempted as stop:
    sys.exit(f"preempted: {stop}")
