"""Snakemake entry for rules prompts and prompts_model: a rule-based strategy's prompts, or a
model-made strategy's per-class pools (synthscale.prompts.models)."""
from synthscale.runtime import job_setup

model_made = snakemake.rule == "prompts_model"
# first: a warm run hands a model-made strategy's job over here; rule-based prompts import no torch
job_setup(snakemake, snakemake.params.threads if model_made else None, fork=model_made)

if not model_made:
    from synthscale.prompts.strategies import write_strategy_prompts

    write_strategy_prompts(snakemake.output[0], snakemake.input.classes, snakemake.wildcards.strategy)
else:
    from synthscale.prompts.models import model_prompts_job

    p = snakemake.params
    model_prompts_job(
        snakemake.output[0], snakemake.wildcards.strategy, p.spec, snakemake.input.classes, snakemake.input.manifest,
        p.device,
    )
