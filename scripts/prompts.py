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
    from synthscale.data.real import split_shards
    from synthscale.prompts.models import build_pools, write_model_prompts

    spec = snakemake.params.spec
    real = split_shards(snakemake.input.manifest, "train") if spec["kind"] == "caption" else []
    pools = build_pools(spec, classes, spec["seed"], snakemake.params.device, real)
    report = write_model_prompts(snakemake.output[0], strategy, spec, pools)
    want = spec.get("count") or spec.get("images_per_class")
    print(f"{strategy}: {sum(p['kept'] for p in pools)} prompts for {report['classes']} classes", file=sys.stderr)
    if report["short"]:
        print(f"{strategy}: {len(report['short'])} classes have fewer than {want} distinct prompts: "
              f"{', '.join(report['short'][:20])}", file=sys.stderr)
    if report["empty"]:
        print(f"{strategy}: no usable text for {', '.join(report['empty'])}: the class name stands in",
              file=sys.stderr)
