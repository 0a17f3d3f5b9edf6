# Stage 1: the real dataset, prepared into shards plus a class table.


rule prepare_data:
    output:
        manifest=PLAN.manifest,
        classes=PLAN.classes,
    params:
        dataset=config["dataset"],
        eval_sets=config["eval_sets"],
        seed=config["seed"],
    log:
        f"{R}/logs/prepare_data.log",
    threads: threads("default")
    resources:
        **res("default"),
    script:
        "../scripts/prepare_data.py"
