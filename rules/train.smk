# Stage 5: a timm classifier per (source, N, seed): synthetic sets, the real baseline, the full
# real set and real + synthetic mixes (the parts come from PLAN.train_parts: real first, then
# synthetic), streamed from the shards through a DataLoader (synthscale.data.loader); one model per
# replicate seed of train.seeds. A job with resources.train.gpu > 1 runs DDP through torchrun.


rule train_classifier:
    input:
        data=train_inputs,
        manifest=PLAN.manifest,
    output:
        model=PLAN.model("{source}", "{n}", "{seed}"),
        log=PLAN.train_log("{source}", "{n}", "{seed}"),
    log:
        PLAN.log("train_classifier", PLAN.run_key("{source}", "{n}", "{seed}")),
    benchmark:
        PLAN.benchmark("train_classifier", PLAN.run_key("{source}", "{n}", "{seed}"))
    conda:
        "../envs/synthscale.yaml"
    threads: threads("train")
    resources:
        **res("train"),
    params:
        recipe=config["train"],
        parts=lambda wc: PLAN.train_parts(wc.source, wc.n),
        checkpoint=lambda wc: PLAN.train_checkpoint(wc.source, wc.n, wc.seed),
        ddp_spec=lambda wc: PLAN.train_ddp_spec(wc.source, wc.n, wc.seed),
        mix=PLAN.train_mix(),
        device=config["device"],
        gpus=config["resources"]["train"]["gpu"],
        threads=threads("train"),
    script:
        "../scripts/train_classifier.py"
