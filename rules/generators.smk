# Stage 2: generators the workflow trains itself (pretrained ones are loaded by Hub id or path).


def caption_prompts(wildcards):
    gen = PLAN.generator(wildcards.generator)
    return [PLAN.prompts(s) for s in gen["caption_strategies"]]


rule train_generator:
    input:
        manifest=PLAN.manifest,
        prompts=caption_prompts,
    output:
        directory(f"{R}/generators/{{generator}}"),
    params:
        spec=lambda wc: PLAN.generator(wc.generator),
        seed=config["seed"],
        threads=threads("train_generator"),
    log:
        f"{R}/logs/generators/{{generator}}.log",
    threads: threads("train_generator")
    resources:
        **res("train_generator"),
    script:
        "../scripts/train_generator.py"
