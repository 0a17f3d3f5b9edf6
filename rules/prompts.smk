# Stage 3: text prompts per class, one file per strategy. Rule-based strategies are functions of
# the class table; model-made ones (prompt_models: Word2Sen, IN-Caption, LLM) are jobs of their
# own, with the "prompts" resources (a GPU for a large model).
rule prompts:
    input:
        classes=PLAN.classes,
    output:
        PLAN.prompts("{strategy}"),
    log:
        PLAN.log("prompts", "{strategy}"),
    wildcard_constraints:
        strategy=PLAN.prompt_regex(),
    # upstream of the generators and of every synthetic set: scheduled before independent jobs
    priority: 10
    conda:
        "../envs/synthscale.yaml"
    threads: threads("default")
    resources:
        **res("default"),
    script:
        "../scripts/prompts.py"


rule prompts_model:
    input:
        classes=PLAN.classes,
        manifest=PLAN.manifest,
    output:
        PLAN.prompts("{strategy}"),
    log:
        PLAN.log("prompts_model", "{strategy}"),
    benchmark:
        PLAN.benchmark("prompts_model", "{strategy}")
    wildcard_constraints:
        strategy=PLAN.prompt_regex(model=True),
    # upstream of the generators and of every synthetic set: scheduled before independent jobs
    priority: 10
    conda:
        "../envs/synthscale.yaml"
    threads: threads("prompts")
    resources:
        **res("prompts"),
    params:
        spec=lambda wc: PLAN.prompt_model(wc.strategy),
        device=config["device"],
        threads=threads("prompts"),
    script:
        "../scripts/prompts.py"
