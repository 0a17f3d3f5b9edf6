"""Snakemake entry for rule quality_summary: the tidy quality table with CAS, plots and findings."""
from synthscale.quality import summarize
from synthscale.runtime import job_setup

job_setup(snakemake)
p = snakemake.params
sources = [tuple(s) for s in p.sources]
summarize(
    snakemake.input.sets,
    snakemake.input.per_class,
    sources,
    cas_csvs=dict(zip(sources, snakemake.input.cas)),
    eval_per_class={s: dict(zip(p.n_images, paths)) for s, paths in zip(sources, p.eval_per_class)},
    reference_json=snakemake.input.reference,
    outputs={k: snakemake.output[k] for k in p.output_keys},
    real_eval_csv=snakemake.input.real_eval[0] if snakemake.input.real_eval else None,
    eval_set=p.eval_set,
    n_label=p.cas_n,
)
