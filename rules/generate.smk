# Stage 4: synthetic images, one WebDataset shard per job, so raising N only adds shards.


rule generate_shard:
    input:
        generator=generator_input,
        prompts=PLAN.prompts("{strategy}"),
        classes=PLAN.classes,
    output:
        f"{R}/synthetic/{{generator}}/g{{guidance}}/{{strategy}}/shard-{{k}}.tar",
    log:
        f"{R}/logs/synthetic/{{generator}}/g{{guidance}}/{{strategy}}/shard-{{k}}.log",
    conda:
        "../envs/synthscale.yaml"
    threads: threads("generate")
    resources:
        **res("generate"),
    params:
        spec=lambda wc: PLAN.generator(wc.generator),
        generation=config["generation"],
        device=config["device"],
        threads=threads("generate"),
    script:
        "../scripts/generate_shard.py"
