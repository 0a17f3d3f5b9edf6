# Stage 4: synthetic images, one WebDataset shard per job, so raising N only adds shards.


def generator_input(wildcards):
    gen = PLAN.generator(wildcards.generator)
    return PLAN.generator_dir(gen["name"]) if gen["kind"] == "trained" else []


rule generate_shard:
    input:
        generator=generator_input,
        prompts=PLAN.prompts("{strategy}"),
        classes=PLAN.classes,
    output:
        f"{R}/synthetic/{{generator}}/g{{guidance}}/{{strategy}}/shard-{{k}}.tar",
    params:
        spec=lambda wc: PLAN.generator(wc.generator),
        generation=config["generation"],
        device=config["device"],
        threads=threads("generate"),
    log:
        f"{R}/logs/synthetic/{{generator}}/g{{guidance}}/{{strategy}}/shard-{{k}}.log",
    threads: threads("generate")
    resources:
        **res("generate"),
    script:
        "../scripts/generate_shard.py"
