# Stage 5: a timm classifier per (source, N): synthetic sets, the real baseline and the full real set.


def train_inputs(wildcards):
    if wildcards.source == "real":
        return [PLAN.manifest]
    src = parse_source(wildcards.source)
    n = PLAN.max_n if wildcards.n == "all" else int(wildcards.n)
    return PLAN.shards(src.generator, src.guidance, src.strategy, n)


rule train_classifier:
    input:
        data=train_inputs,
        manifest=PLAN.manifest,
    output:
        model=f"{R}/train/{config['train']['arch']}/{{source}}/n{{n}}/model.safetensors",
        log=f"{R}/train/{config['train']['arch']}/{{source}}/n{{n}}/log.csv",
    params:
        recipe=config["train"],
        seed=config["seed"],
        device=config["device"],
        threads=threads("train"),
    log:
        f"{R}/logs/train/{config['train']['arch']}/{{source}}/n{{n}}.log",
    threads: threads("train")
    resources:
        **res("train"),
    script:
        "../scripts/train_classifier.py"
