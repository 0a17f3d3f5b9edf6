"""Snakemake entry for rule sample_grid: adapt snakemake.* to synthscale.analysis.quality_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.quality_report import plot_sample_grid
from synthscale.data.real import class_names
from synthscale.data.shards import load_arrays

wc = snakemake.wildcards
images, labels, records = load_arrays([snakemake.input.shard], mode="RGB")
names = class_names(snakemake.input.classes)
title = f"{wc.generator}, guidance {wc.guidance}, prompts: {wc.strategy} (first shard)"
plot_sample_grid(images, labels, names, title, snakemake.output[0])
