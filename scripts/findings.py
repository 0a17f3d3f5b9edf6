"""Snakemake entry for rule findings: adapt snakemake.* to synthscale.report."""
import pandas as pd

from synthscale.analysis import read_summary
from synthscale.data import read_manifest
from synthscale.report import scaling_findings, write_html
from synthscale.runtime import job_setup

job_setup(snakemake)
n_classes = read_manifest(snakemake.input.manifest)["classes"]
fits = pd.read_csv(snakemake.input.scaling, dtype={"generator": str, "strategy": str})
lines = scaling_findings(read_summary(snakemake.input.summary), fits, n_classes)
write_html(snakemake.output[0], f"Findings: {snakemake.params.study}", lines)
