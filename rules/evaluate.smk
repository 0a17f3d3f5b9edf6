# Stage 6: every trained classifier on every evaluation set (in and out of distribution).
# One job per training source evaluates its models at every N: evaluation takes about a second,
# while starting a job (importing torch and timm) takes several.


rule evaluate:
    input:
        models=lambda wc: [PLAN.model(wc.source, n) for n in PLAN.n_labels(wc.source)],
        manifest=PLAN.manifest,
    output:
        metrics=f"{R}/eval/{config['train']['arch']}/{{source}}/metrics.csv",
        per_class=f"{R}/eval/{config['train']['arch']}/{{source}}/per_class.csv",
    log:
        f"{R}/logs/eval/{config['train']['arch']}/{{source}}.log",
    conda:
        "../envs/synthscale.yaml"
    threads: threads("evaluate")
    resources:
        **res("evaluate"),
    params:
        n_labels=lambda wc: PLAN.n_labels(wc.source),
        eval_sets=[e["name"] for e in config["eval_sets"]],
        batch_size=config["train"]["eval_batch_size"],
        device=config["device"],
        threads=threads("evaluate"),
    script:
        "../scripts/evaluate.py"
