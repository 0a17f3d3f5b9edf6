"""Snakemake entry for rule generate_block: adapt snakemake.* to synthscale.generation.generate."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.data.real import class_names
from synthscale.generation.generate import block_fingerprint, generate_block
from synthscale.generation.pipelines import generator_source, load_generator, set_sampler, speed_up
from synthscale.prompts.strategies import read_prompts

spec, gen_cfg, wc = snakemake.params.spec, snakemake.params.generation, snakemake.wildcards
source = generator_source(snakemake.input.generator, spec)
pipe = load_generator(source, device=snakemake.params.device, dtype=spec["dtype"])
scheduler = set_sampler(pipe, gen_cfg["sampler"])
speed_up(pipe, gen_cfg["channels_last"], gen_cfg["vae_slicing"], gen_cfg["compile"])
outputs = list(snakemake.output)
generate_block(
    pipe,
    outputs,
    first_shard=int(wc.block) * len(outputs),
    # a finished shard of a killed job is reused only if it was made with these settings
    fingerprint=block_fingerprint(
        spec, gen_cfg, wc.guidance, snakemake.input.prompts, snakemake.params.device, source
    ),
    shard_size=gen_cfg["shard_size"],
    class_prompts=read_prompts(snakemake.input.prompts),
    base_seed=gen_cfg["seed"],
    guidance=float(wc.guidance),
    steps=gen_cfg["steps"],
    sampler=scheduler,
    batch_size=snakemake.params.batch_size,
    generator_name=spec["name"],
    class_names=class_names(snakemake.input.classes),
    size=spec["size"],
    storage=gen_cfg["storage"],
    pad=gen_cfg["compile"] is not None,
    prompt_cache=gen_cfg["prompt_cache"],
)
