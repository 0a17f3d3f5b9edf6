# Stage 5: a timm classifier per (source, N): synthetic sets, the real baseline, the full real set
# and real + synthetic mixes (the parts come from PLAN.train_parts: real first, then synthetic).


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
        parts=lambda wc: PLAN.train_parts(wc.source, wc.n),
        mix={k: config["mix"][k] for k in ("mode", "synthetic_prob")},
        seed=config["seed"],
        device=config["device"],
        threads=threads("train"),
    script:
        "../scripts/train_classifier.py"
