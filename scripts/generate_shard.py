"""Snakemake entry for rule generate_shard: adapt snakemake.* to synthscale.generate."""
import pandas as pd

from synthscale.finetune import is_pixel_pipeline
from synthscale.generate import generate_shard
from synthscale.generators import load_generator, set_sampler
from synthscale.prompts import read_prompts
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)
spec, gen_cfg, wc = snakemake.params.spec, snakemake.params.generation, snakemake.wildcards
local = spec["kind"] != "pretrained"  # trained or fine-tuned here: the rule's input folder
source = snakemake.input.generator if local else spec["source"]
trained = local and is_pixel_pipeline(source)
pipe = load_generator(source, trained_here=trained, device=snakemake.params.device, dtype=spec["dtype"])
set_sampler(pipe, gen_cfg["sampler"])
classes = pd.read_csv(snakemake.input.classes, keep_default_na=False)
generate_shard(
    pipe,
    snakemake.output[0],
    k=int(wc.k),
    shard_size=gen_cfg["shard_size"],
    class_prompts=read_prompts(snakemake.input.prompts),
    base_seed=gen_cfg["seed"],
    guidance=float(wc.guidance),
    steps=gen_cfg["steps"],
    sampler=gen_cfg["sampler"],
    batch_size=gen_cfg["batch_size"],
    generator_name=spec["name"],
    class_names=classes.sort_values("index")["name"].tolist(),
    size=spec["size"],
)
