# Stage 6: every trained classifier on every evaluation set (in and out of distribution), streamed.
# One job per training source evaluates its models at every (N, seed): evaluation takes about a
# second, while starting a job (importing torch and timm) takes several.


rule evaluate:
    input:
        models=lambda wc: PLAN.models(wc.source),
        manifest=PLAN.manifest,
    output:
        metrics=PLAN.eval_csv("{source}"),
        per_class=PLAN.eval_per_class("{source}"),
    log:
        PLAN.log("evaluate", "{source}"),
    benchmark:
        PLAN.benchmark("evaluate", "{source}")
    conda:
        "../envs/synthscale.yaml"
    threads: threads("evaluate")
    resources:
        **res("evaluate"),
    params:
        n_labels=lambda wc: PLAN.model_n_labels(wc.source),
        seeds=lambda wc: PLAN.model_seeds(wc.source),
        eval_sets=PLAN.eval_set_names(),
        recipe=config["train"],
        batch_size=config["train"]["eval_batch_size"],
        workers=config["train"]["eval_workers"],
        device=config["device"],
        threads=threads("evaluate"),
    script:
        "../scripts/evaluate.py"
