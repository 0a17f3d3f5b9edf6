"""Snakemake entry for rule generate_block: adapt snakemake.* to synthscale.generation.generate."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

import hashlib
import os

from synthscale.data.real import class_names
from synthscale.generation.generate import generate_block
from synthscale.generation.pipelines import load_generator, set_sampler, speed_up
from synthscale.prompts.strategies import read_prompts

spec, gen_cfg, wc = snakemake.params.spec, snakemake.params.generation, snakemake.wildcards
# the generator's own folder first (a LoRA generator made here also lists its base's folder)
folders = [snakemake.input.generator] if isinstance(snakemake.input.generator, str) else list(snakemake.input.generator)
source = folders[0] if folders else spec["source"]
pipe = load_generator(source, device=snakemake.params.device, dtype=spec["dtype"])
scheduler = set_sampler(pipe, gen_cfg["sampler"])
speed_up(pipe, gen_cfg["channels_last"], gen_cfg["vae_slicing"], gen_cfg["compile"])
outputs = list(snakemake.output)
first = int(wc.block) * len(outputs)
prompts_sha = hashlib.sha256(open(snakemake.input.prompts, "rb").read()).hexdigest()
generate_block(
    pipe,
    outputs,
    first_shard=first,
    # a finished shard of a killed job is reused only if it was made with these settings
    fingerprint={"spec": spec, "generation": gen_cfg, "guidance": wc.guidance, "prompts": prompts_sha,
                 "device": snakemake.params.device,
                 "source_mtime": os.path.getmtime(source) if os.path.exists(source) else None},
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
