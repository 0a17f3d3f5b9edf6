# Stage 5: a timm classifier per (source, N): synthetic sets, the real baseline and the full real set.


rule train_classifier:
    input:
        data=train_inputs,
        manifest=PLAN.manifest,
    output:
        model=f"{R}/train/{config['train']['arch']}/{{source}}/n{{n}}/model.safetensors",
        log=f"{R}/train/{config['train']['arch']}/{{source}}/n{{n}}/log.csv",
    log:
        f"{R}/logs/train/{config['train']['arch']}/{{source}}/n{{n}}.log",
    conda:
        "../envs/synthscale.yaml"
    threads: threads("train")
    resources:
        **res("train"),
    params:
        recipe=config["train"],
        seed=config["seed"],
        device=config["device"],
        threads=threads("train"),
    script:
        "../scripts/train_classifier.py"
