# Stage 4: synthetic images. One job loads the generator once and writes a block of consecutive
# shards (generation.images_per_job); a shard stays the unit of storage, so raising N only adds shards.


rule generate_block:
    input:
        generator=generator_input,
        prompts=PLAN.prompts("{strategy}"),
        classes=PLAN.classes,
    output:
        PLAN.block_outputs(
            PLAN.synthetic_dir("{generator}", "{guidance}", "{strategy}")
        ),
    log:
        PLAN.log("generate_block", PLAN.set_key(SET_WILDCARDS, block="{block}")),
    benchmark:
        PLAN.benchmark("generate_block", PLAN.set_key(SET_WILDCARDS, block="{block}"))
    wildcard_constraints:
        block=PLAN.block_regex,
    # on the critical path: every synthetic set waits for it, so it starts before independent jobs
    priority: 5
    conda:
        "../envs/synthscale.yaml"
    threads: threads("generate")
    resources:
        **res("generate"),
    params:
        spec=generation_spec,
        batch_size=lambda wc: PLAN.generation_batch_size(wc.generator),
        generation=config["generation"],
        device=config["device"],
        threads=threads("generate"),
    script:
        "../scripts/generate_block.py"
