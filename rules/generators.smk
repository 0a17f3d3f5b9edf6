# Stage 2: generators the workflow trains itself or fine-tunes (pretrained ones are loaded by Hub id or path).


rule train_generator:
    input:
        manifest=PLAN.manifest,
        prompts=caption_prompts,
    output:
        directory(PLAN.generator_dir("{generator}")),
    log:
        PLAN.log("train_generator", "{generator}"),
    benchmark:
        PLAN.benchmark("train_generator", "{generator}")
    wildcard_constraints:
        generator=generator_regex("trained"),
    # on the critical path: every synthetic set waits for it, so it starts before independent jobs
    priority: 10
    conda:
        "../envs/synthscale.yaml"
    threads: threads("train_generator")
    resources:
        **res("train_generator"),
    params:
        spec=lambda wc: PLAN.generator(wc.generator),
        channels=config["dataset"]["channels"],
        seed=config["seed"],
        threads=threads("train_generator"),
    script:
        "../scripts/train_generator.py"


# Azizi et al.: the base's denoiser fine-tuned on the real train split with class-name captions;
# the folder is a full pipeline, or LoRA weights plus a synthscale.json naming the base. A job with
# resources.finetune.gpu > 1 runs DDP through torchrun (finetune.batch_size is the global batch).
rule finetune_generator:
    input:
        manifest=PLAN.manifest,
        prompts=finetune_prompts,
        base=finetune_base,
    output:
        directory(PLAN.generator_dir("{generator}")),
    log:
        PLAN.log("finetune_generator", "{generator}"),
    benchmark:
        PLAN.benchmark("finetune_generator", "{generator}")
    wildcard_constraints:
        generator=generator_regex("finetuned"),
    # on the critical path: every synthetic set waits for it, so it starts before independent jobs
    priority: 10
    conda:
        "../envs/synthscale.yaml"
    threads: threads("finetune")
    resources:
        **res("finetune"),
    params:
        spec=lambda wc: PLAN.generator(wc.generator),
        base=finetune_base_source,
        checkpoint=lambda wc: PLAN.generator_checkpoint(wc.generator),
        ddp_spec=lambda wc: PLAN.generator_ddp_spec(wc.generator),
        seed=config["seed"],
        device=config["device"],
        gpus=config["resources"]["finetune"]["gpu"],
        threads=threads("finetune"),
    script:
        "../scripts/finetune_generator.py"
