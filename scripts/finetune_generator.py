"""Snakemake entry for rule finetune_generator: adapt snakemake.* to synthscale.generation.finetune."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.data.real import split_shards
from synthscale.distributed import run_training
from synthscale.generation.finetune import finetune_generator, generator_provenance, run_distributed
from synthscale.preemption import exit_when_preempted
from synthscale.prompts.strategies import read_prompts

p = snakemake.params
spec = dict(
    base=p.base,
    shards=[str(s) for s in split_shards(snakemake.input.manifest, "train")],  # JSON for torchrun's ranks
    class_prompts=[read_prompts(f) for f in snakemake.input.prompts],
    recipe=p.spec["finetune"],
    seed=p.seed,
    out_dir=snakemake.output[0],
    checkpoint_path=p.checkpoint,
    device=p.device,
    provenance=generator_provenance(p.spec),
)
with exit_when_preempted():  # checkpoint saved: exit 75 (EX_TEMPFAIL); the retry resumes from it
    run_training(finetune_generator, run_distributed, spec, p.gpus, p.threads, p.ddp_spec)
