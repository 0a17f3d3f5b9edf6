# Stage 1: the real dataset, prepared into shards plus a class table.


rule prepare_data:
    output:
        manifest=PLAN.manifest,
        classes=PLAN.classes,
    log:
        f"{R}/logs/prepare_data.log",
    benchmark:
        f"{R}/benchmarks/prepare_data/prepare_data.tsv"
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
