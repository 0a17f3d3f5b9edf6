"""Snakemake entry for rule train_generator: adapt snakemake.* to synthscale.generation.pipelines."""
from synthscale.runtime import job_setup

job_setup(snakemake, snakemake.params.threads)  # first: a warm run hands the job over here

from synthscale.data.real import split_shards
from synthscale.data.shards import image_mode
from synthscale.generation.tinygen import generator_training_set, train_tiny_generator
from synthscale.prompts.strategies import read_prompts

spec = snakemake.params.spec
# only the real images the run draws are read (a shift, for a base that misses the target
# distribution, goes over the whole split in order, as before)
images, captions = generator_training_set(
    split_shards(snakemake.input.manifest, "train"),
    image_mode(snakemake.params.channels),
    [read_prompts(p) for p in snakemake.input.prompts],
    spec["recipe"],
    snakemake.params.seed,
    spec.get("train_shift"),
)
train_tiny_generator(
    images, captions, spec["arch"], spec["recipe"], snakemake.params.seed, snakemake.output[0]
)
