"""Snakemake entry for rule prompts: adapt snakemake.* to synthscale.prompts."""
import pandas as pd

from synthscale.prompts import write_prompts
from synthscale.runtime import job_setup

job_setup(snakemake)
classes = pd.read_csv(snakemake.input.classes, dtype={"id": str}, keep_default_na=False)
write_prompts(snakemake.output[0], classes, snakemake.wildcards.strategy)
