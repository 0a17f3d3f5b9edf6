"""Snakemake entry for rule generate_block: adapt snakemake.* to synthscale.generation.generate.run_block."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.generation.generate import run_block

p, wc, inp = snakemake.params, snakemake.wildcards, snakemake.input
run_block(
    inp.generator, p.spec, p.generation, wc.guidance, wc.block, inp.prompts, inp.classes, snakemake.output,
    p.device, p.batch_size,
)
