# Stage 2: generators the workflow trains itself (pretrained ones are loaded by Hub id or path).


rule train_generator:
    input:
        manifest=PLAN.manifest,
        prompts=caption_prompts,
    output:
        directory(f"{R}/generators/{{generator}}"),
    log:
        f"{R}/logs/generators/{{generator}}.log",
    conda:
        "../envs/synthscale.yaml"
    threads: threads("train_generator")
    resources:
        **res("train_generator"),
    params:
        spec=lambda wc: PLAN.generator(wc.generator),
        seed=config["seed"],
        threads=threads("train_generator"),
    script:
        "../scripts/train_generator.py"
