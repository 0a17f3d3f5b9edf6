# Stage 6: every trained classifier on every evaluation set (in and out of distribution).


rule evaluate:
    input:
        model=PLAN.model("{source}", "{n}"),
        manifest=PLAN.manifest,
    output:
        metrics=f"{R}/eval/{config['train']['arch']}/{{source}}/n{{n}}.csv",
        per_class=f"{R}/eval/{config['train']['arch']}/{{source}}/n{{n}}_per_class.csv",
    params:
        eval_sets=[e["name"] for e in config["eval_sets"]],
        batch_size=config["train"]["eval_batch_size"],
        device=config["device"],
        threads=threads("evaluate"),
    log:
        f"{R}/logs/eval/{config['train']['arch']}/{{source}}/n{{n}}.log",
    threads: threads("evaluate")
    resources:
        **res("evaluate"),
    script:
        "../scripts/evaluate.py"
