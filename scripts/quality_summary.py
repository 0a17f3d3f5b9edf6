"""Snakemake entry for rule quality_summary: the tidy quality table with CAS, plots and findings."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis.quality_report import summarize_quality

summarize_quality(
    snakemake.input.sets,
    snakemake.input.per_class,
    # absent when train.supervised is false: no CAS, no per-class slopes
    summary_csv=getattr(snakemake.input, "summary", None),
    per_class_csv=getattr(snakemake.input, "eval_per_class", None),
    reference_json=snakemake.input.reference,
    outputs={k: snakemake.output[k] for k in snakemake.params.output_keys},
    eval_set=snakemake.params.eval_set,
    generators=snakemake.params.generators,
)
