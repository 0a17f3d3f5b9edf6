# Stage 3: text prompts per class, one file per strategy.


rule prompts:
    input:
        classes=PLAN.classes,
    output:
        f"{R}/prompts/{config['dataset']['name']}/{{strategy}}.jsonl",
    log:
        f"{R}/logs/prompts/{{strategy}}.log",
    conda:
        "../envs/synthscale.yaml"
    threads: threads("default")
    resources:
        **res("default"),
    script:
        "../scripts/prompts.py"
