"""Snakemake entry for rule clip_report: adapt snakemake.* to synthscale.analysis.clip_report."""
from synthscale.runtime import job_setup

job_setup(snakemake)  # first: a warm run hands the job over here

from synthscale.analysis import clip_report as CR
from synthscale.data.real import read_manifest

p, out = snakemake.params, snakemake.output
n_classes = int(read_manifest(snakemake.input.manifest)["classes"])
summary = CR.build_clip_summary(p.sources, snakemake.input.metrics, p.ood)
scaling = CR.clip_scaling(summary, draws=p.bootstrap, seed=p.seed)
table = CR.zero_shot_table(summary, n_classes)
CR.write_tables(summary, out.summary, scaling, out.scaling, table, out.table)
CR.plot_clip_scaling(summary, out.plot)
CR.write_clip_findings(CR.clip_findings(summary, scaling, n_classes, p.reference_set), out.findings, p.study)
