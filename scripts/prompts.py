"""Snakemake entry for rules prompts and prompts_model: a rule-based strategy's prompts, or a
model-made strategy's per-class pools (synthscale.prompts.models)."""
from synthscale.runtime import job_setup

model_made = snakemake.rule == "prompts_model"
# first: a warm run hands a model-made strategy's job over here; rule-based prompts import no torch
job_setup(snakemake, snakemake.params.threads if model_made else None, fork=model_made)

import sys

from synthscale.data.real import read_classes

classes = read_classes(snakemake.input.classes)
strategy = snakemake.wildcards.strategy
if not model_made:
    from synthscale.prompts.strategies import write_prompts

    write_prompts(snakemake.output[0], classes, strategy)
else:
    from synthscale.prompts.models import make_model_prompts

    p = snakemake.params
    for line in make_model_prompts(snakemake.output[0], strategy, p.spec, classes, snakemake.input.manifest, p.device):
        print(line, file=sys.stderr)
