"""Snakemake entry for rule train_generator: adapt snakemake.* to synthscale.generators."""
from synthscale.data import apply_shift, split_shards
from synthscale.generators import caption_sampler, train_tiny_generator
from synthscale.prompts import read_prompts
from synthscale.runtime import job_setup
from synthscale.shards import load_arrays

job_setup(snakemake, snakemake.params.threads)
spec = snakemake.params.spec
mode = "L" if snakemake.config["dataset"]["channels"] == 1 else "RGB"
images, labels, _ = load_arrays(split_shards(snakemake.input.manifest, "train"), mode=mode)
if "train_shift" in spec:  # a base that misses the target distribution (fine-tuning then corrects it)
    images = apply_shift(images, spec["train_shift"], snakemake.params.seed)
captions = caption_sampler([read_prompts(p) for p in snakemake.input.prompts], labels)
train_tiny_generator(
    images, captions, spec["arch"], spec["recipe"], snakemake.params.seed, snakemake.output[0]
)
