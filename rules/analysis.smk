# Stage 7: one tidy table, scaling fits, plots and findings, all into `snakemake --report`.


rule summary:
    input:
        metrics=PLAN.all_eval(),
        per_class=PLAN.all_eval_per_class(),
        manifest=PLAN.manifest,
    output:
        summary=report(
            PLAN.summary,
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "summary"},
        ),
        per_class=PLAN.per_class,
    log:
        PLAN.log("summary"),
    localrule: True
    conda:
        "../envs/synthscale.yaml"
    params:
        sources=PLAN.sources(),
        arch=config["train"]["arch"],
        ood=PLAN.eval_set_ood(),
    script:
        "../scripts/summary.py"


rule scaling_fits:
    input:
        PLAN.summary,
    output:
        report(
            PLAN.scaling,
            caption="../report/scaling.rst",
            category="Tables",
            labels={"table": "scaling fits"},
        ),
    log:
        PLAN.log("scaling_fits"),
    benchmark:
        PLAN.benchmark("scaling_fits", "all")
    localrule: True
    conda:
        "../envs/synthscale.yaml"
    params:
        metrics=config["analysis"]["metrics"],
        target_loss=config["analysis"]["target_loss"],
        target_top1=config["analysis"]["target_top1"],
        level=config["analysis"]["level"],
    script:
        "../scripts/scaling_fits.py"


rule plot_scaling:
    input:
        summary=PLAN.summary,
        manifest=PLAN.manifest,
    output:
        report(
            PLAN.scaling_plot("{metric}"),
            caption="../report/scaling_plot.rst",
            category="Scaling",
            labels={"figure": "{metric} against N"},
        ),
    log:
        PLAN.log("plot_scaling", "{metric}"),
    wildcard_constraints:
        metric=PLAN.scaling_metric_regex,
    localrule: True
    conda:
        "../envs/synthscale.yaml"
    script:
        "../scripts/plot_scaling.py"


rule plot_guidance_strategy:
    input:
        PLAN.summary,
    output:
        report(
            PLAN.guidance_plot,
            caption="../report/guidance_strategy.rst",
            category="Scaling",
            labels={"figure": "guidance x strategy"},
        ),
    log:
        PLAN.log("plot_guidance_strategy"),
    localrule: True
    conda:
        "../envs/synthscale.yaml"
    script:
        "../scripts/plot_guidance_strategy.py"


rule sample_grid:
    input:
        shard=PLAN.sample_shard(SET_WILDCARDS),
        classes=PLAN.classes,
    output:
        report(
            PLAN.sample_grid(SET_WILDCARDS),
            caption="../report/samples.rst",
            category="Samples",
            subcategory="{generator}",
            labels={"guidance": "{guidance}", "strategy": "{strategy}"},
        ),
    log:
        PLAN.log("sample_grid", PLAN.sample_name(SET_WILDCARDS)),
    localrule: True
    conda:
        "../envs/synthscale.yaml"
    script:
        "../scripts/sample_grid.py"


rule findings:
    input:
        summary=PLAN.summary,
        scaling=PLAN.scaling,
        manifest=PLAN.manifest,
    output:
        report(PLAN.findings, caption="../report/findings.rst", category="Findings"),
    log:
        PLAN.log("findings"),
    localrule: True
    conda:
        "../envs/synthscale.yaml"
    params:
        study=config["study"],
    script:
        "../scripts/findings.py"


rule cost:
    input:
        summary=PLAN.summary,
        manifest=PLAN.manifest,
        # every other output of the study: the benchmark files are complete once these exist
        scaling=PLAN.scaling,
        quality=QUALITY_OUTPUTS["table"],
    output:
        table=report(
            COST_OUTPUTS["table"],
            caption="../report/cost.rst",
            category="Cost",
            labels={"table": "compute cost per grid point"},
        ),
        plot=report(
            COST_OUTPUTS["plot"],
            caption="../report/cost.rst",
            category="Cost",
            labels={"figure": "compute cost per grid point"},
        ),
        findings=report(
            COST_OUTPUTS["findings"],
            caption="../report/cost.rst",
            category="Cost",
            labels={"text": "cost findings"},
        ),
    log:
        PLAN.log("cost"),
    localrule: True
    conda:
        "../envs/synthscale.yaml"
    params:
        benchmarks=PLAN.benchmarks_dir,
        eval_set=config["analysis"]["eval_set"],
        images_per_job=PLAN.images_per_job(),
    script:
        "../scripts/cost.py"
