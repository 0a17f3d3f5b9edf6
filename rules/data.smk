# Stage 1: the real dataset, prepared into shards plus a class table.


rule prepare_data:
    output:
        manifest=PLAN.manifest,
        classes=PLAN.classes,
    log:
        PLAN.log("prepare_data"),
    benchmark:
        PLAN.benchmark("prepare_data", "prepare_data")
    conda:
        "../envs/synthscale.yaml"
    threads: threads("prepare")
    resources:
        **res("prepare"),
    params:
        dataset=config["dataset"],
        eval_sets=config["eval_sets"],
        seed=config["seed"],
    script:
        "../scripts/prepare_data.py"
