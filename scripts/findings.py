"""Snakemake entry for rule findings: adapt snakemake.* to synthscale.analysis."""
import pandas as pd

from synthscale.analysis import findings, read_summary, write_findings_html
from synthscale.data import read_manifest
from synthscale.runtime import job_setup

job_setup(snakemake)
n_classes = read_manifest(snakemake.input.manifest)["classes"]
lines = findings(read_summary(snakemake.input.summary), pd.read_csv(snakemake.input.scaling), n_classes)
write_findings_html(lines, snakemake.output[0], f"Findings: {snakemake.params.study}")
