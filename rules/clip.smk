# Stage 8: Fan et al.'s CLIP arm. open_clip (open_clip_train) trained from scratch per (source, N) on
# real, synthetic and synthetic + real image-text pairs, evaluated zero-shot (class names x CLIP's 80
# templates), with its own scaling fits, plot and findings. A train_clip job with resources.clip.gpu > 1
# runs DDP through torchrun (--standalone, one rank a GPU).
rule clip_pairs:
    input:
        data=clip_train_inputs,
        manifest=PLAN.manifest,
        classes=PLAN.classes,
    output:
        pairs=temp(directory(PLAN.clip_pairs("{clip_source}", "{n}", "{seed}"))),
    log:
        PLAN.log("clip_pairs", PLAN.run_key("{clip_source}", "{n}", "{seed}")),
    benchmark:
        PLAN.benchmark("clip_pairs", PLAN.run_key("{clip_source}", "{n}", "{seed}"))
    wildcard_constraints:
        clip_source=CLIP_SOURCE_REGEX,
        n=r"\d+",
        seed=r"\d+",
    conda:
        "../envs/synthscale.yaml"
    threads: threads("clip_pairs")
    resources:
        **res("clip_pairs"),
    params:
        recipe=PLAN.clip_recipe,
        mix_real_fraction=PLAN.clip_mix_real_fraction(),
        loaders=PLAN.clip_loaders,
    script:
        "../scripts/clip_pairs.py"


rule train_clip:
    input:
        pairs=PLAN.clip_pairs("{clip_source}", "{n}", "{seed}"),
    output:
        model=PLAN.clip_model("{clip_source}", "{n}", "{seed}"),
        config=PLAN.clip_model_config("{clip_source}", "{n}", "{seed}"),
    log:
        PLAN.log("train_clip", PLAN.run_key("{clip_source}", "{n}", "{seed}")),
    benchmark:
        PLAN.benchmark("train_clip", PLAN.run_key("{clip_source}", "{n}", "{seed}"))
    wildcard_constraints:
        clip_source=CLIP_SOURCE_REGEX,
        n=r"\d+",
        seed=r"\d+",
    conda:
        "../envs/synthscale.yaml"
    threads: threads("clip")
    resources:
        **res("clip"),
    params:
        recipe=PLAN.clip_recipe,
        work=lambda wc: PLAN.clip_work_dir(wc.clip_source, wc.n, wc.seed),
        train_log=lambda wc: PLAN.clip_train_log(wc.clip_source, wc.n, wc.seed),
        device=config["device"],
        threads=threads("clip"),
        gpus=config["resources"]["clip"]["gpu"],
    script:
        "../scripts/train_clip.py"


rule evaluate_clip:
    input:
        models=lambda wc: PLAN.clip_models(wc.clip_source),
        manifest=PLAN.manifest,
        classes=PLAN.classes,
    output:
        metrics=PLAN.clip_eval_csv("{clip_source}"),
    log:
        PLAN.log("evaluate_clip", "{clip_source}"),
    benchmark:
        PLAN.benchmark("evaluate_clip", "{clip_source}")
    wildcard_constraints:
        clip_source=CLIP_SOURCE_REGEX,
    conda:
        "../envs/synthscale.yaml"
    threads: threads("clip_eval")
    resources:
        **res("clip_eval"),
    params:
        n_labels=lambda wc: PLAN.model_n_labels(wc.clip_source, clip=True),
        seeds=lambda wc: PLAN.model_seeds(wc.clip_source, clip=True),
        eval_sets=PLAN.eval_set_names(),
        templates=CLIP["templates"],
        batch_size=CLIP["eval_batch_size"],
        device=config["device"],
        threads=threads("clip_eval"),
    script:
        "../scripts/evaluate_clip.py"


rule clip_report:
    input:
        metrics=PLAN.all_clip_eval(),
        manifest=PLAN.manifest,
    output:
        summary=report(
            PLAN.clip_summary,
            caption="../report/clip_summary.rst",
            category="CLIP",
            labels={"table": "CLIP zero-shot results"},
        ),
        scaling=report(
            PLAN.clip_scaling,
            caption="../report/clip_scaling.rst",
            category="CLIP",
            labels={"table": "CLIP scaling fits"},
        ),
        table=report(
            PLAN.clip_table,
            caption="../report/clip_table.rst",
            category="CLIP",
            labels={"table": "CLIP zero-shot table"},
        ),
        plot=report(
            PLAN.clip_plot,
            caption="../report/clip_scaling_plot.rst",
            category="CLIP",
            labels={"figure": "CLIP zero-shot loss against N"},
        ),
        findings=report(
            PLAN.clip_findings,
            caption="../report/clip_findings.rst",
            category="CLIP",
            labels={"page": "CLIP findings"},
        ),
    log:
        PLAN.log("clip_report"),
    localrule: True
    conda:
        "../envs/synthscale.yaml"
    params:
        sources=PLAN.clip_sources(),
        ood=PLAN.eval_set_ood(),
        reference_set=PLAN.clip_reference_set(),
        study=config["study"],
    script:
        "../scripts/clip_report.py"
