# Stage: quality of every synthetic set (recognizability, diversity, FID/KID/IS) and CAS.
# The judge is trained once on the real training split (or is a pretrained timm model); the real
# reference set goes through it once; each set is measured on its first shards, so nothing is
# regenerated; the summary adds CAS from the evaluate stage and draws the plots.
# Paths of this stage are Plan's (synthscale/study/plan.py); common.smk forwards wildcards to it.


rule train_judge:
    input:
        manifest=PLAN.manifest,
    output:
        model=PLAN.judge_model,
        log=PLAN.judge_log,
    log:
        PLAN.log("train_judge"),
    benchmark:
        PLAN.benchmark("train_judge", PLAN.dataset)
    conda:
        "../envs/synthscale.yaml"
    threads: threads("judge")
    resources:
        **res("judge"),
    params:
        recipe=PLAN.judge_recipe(),
        seed=config["seed"],
        device=config["device"],
        threads=threads("judge"),
    script:
        "../scripts/train_judge.py"


rule quality_reference:
    input:
        judge=judge_input,
        inception=inception_input,
        manifest=PLAN.manifest,
        classes=PLAN.classes,
    output:
        npz=QREF["npz"],
        json=QREF["json"],
        per_class=QREF["per_class"],
    log:
        PLAN.log("quality_reference"),
    benchmark:
        PLAN.benchmark("quality_reference", PLAN.dataset)
    conda:
        "../envs/synthscale.yaml"
    threads: threads("quality")
    resources:
        **res("quality"),
    params:
        quality=QCFG,
        n_images=QCFG["n_images"],
        image_size=config["dataset"]["image_size"],
        seed=config["seed"],
        device=config["device"],
        threads=threads("quality"),
    script:
        "../scripts/quality_reference.py"


rule quality:
    input:
        judge=judge_input,
        inception=inception_input,
        shards=lambda wc: PLAN.quality_shards(wc.generator, wc.guidance, wc.strategy),
        reference=QREF["npz"],
        manifest=PLAN.manifest,
        classes=PLAN.classes,
    output:
        json=PLAN.quality_json("{generator}", "{guidance}", "{strategy}"),
        per_class=PLAN.quality_per_class("{generator}", "{guidance}", "{strategy}"),
    log:
        PLAN.log("quality", PLAN.set_key(SET_WILDCARDS)),
    benchmark:
        PLAN.benchmark("quality", PLAN.set_key(SET_WILDCARDS))
    conda:
        "../envs/synthscale.yaml"
    threads: threads("quality")
    resources:
        **res("quality"),
    params:
        quality=QCFG,
        n_images=PLAN.quality_n,
        image_size=config["dataset"]["image_size"],
        seed=config["seed"],
        device=config["device"],
        threads=threads("quality"),
    script:
        "../scripts/quality.py"


rule quality_summary:
    input:
        **classifier_tables(),
        sets=PLAN.quality_jsons(),
        per_class=PLAN.quality_per_class_files(),
        reference=QREF["json"],
    output:
        table=report(
            QUALITY_OUTPUTS["table"],
            caption="../report/quality_table.rst",
            category="Quality",
            labels={"table": "quality per synthetic set"},
        ),
        per_class=QUALITY_OUTPUTS["per_class"],
        tradeoff=report(
            QUALITY_OUTPUTS["tradeoff"],
            caption="../report/quality_tradeoff.rst",
            category="Quality",
            labels={"figure": "recognizability vs diversity"},
        ),
        fid_cas=report(
            QUALITY_OUTPUTS["fid_cas"],
            caption="../report/quality_fid_cas.rst",
            category="Quality",
            labels={"figure": "FID and CAS vs guidance"},
        ),
        per_class_plot=report(
            QUALITY_OUTPUTS["per_class_plot"],
            caption="../report/quality_per_class.rst",
            category="Quality",
            labels={"figure": "per-class recognizability vs scaling slope"},
        ),
        findings=report(
            QUALITY_OUTPUTS["findings"],
            caption="../report/quality_findings.rst",
            category="Quality",
            labels={"text": "quality findings"},
        ),
    log:
        PLAN.log("quality_summary"),
    localrule: True
    conda:
        "../envs/synthscale.yaml"
    params:
        generators=config["generators"],
        eval_set=QCFG["reference_set"],
        output_keys=list(QUALITY_OUTPUTS),
    script:
        "../scripts/quality_summary.py"
