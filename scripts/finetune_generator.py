"""Snakemake entry for rule finetune_generator: adapt snakemake.* to synthscale.generation.finetune."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.data.real import split_shards
from synthscale.generation.finetune import finetune_generator, run_distributed
from synthscale.preemption import exit_when_preempted
from synthscale.prompts.strategies import read_prompts

gen = snakemake.params.spec
spec = dict(
    base=snakemake.params.base,
    shards=[str(s) for s in split_shards(snakemake.input.manifest, "train")],
    class_prompts=[read_prompts(p) for p in snakemake.input.prompts],
    recipe=gen["finetune"],
    seed=snakemake.params.seed,
    out_dir=snakemake.output[0],
    checkpoint_path=snakemake.params.checkpoint,
    device=snakemake.params.device,
    provenance={"generator": gen["name"], "base_spec": gen["base"]},
)
with exit_when_preempted():  # checkpoint saved: exit 75 (EX_TEMPFAIL); the retry resumes from it
    if snakemake.params.gpus > 1:  # one torchrun rank per GPU (DDP)
        run_distributed({**spec, "threads": snakemake.params.threads}, snakemake.params.gpus, snakemake.params.ddp_spec)
    else:
        finetune_generator(**spec)
