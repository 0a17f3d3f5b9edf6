# Stage 7b: real + synthetic mixes (issue 9): exchange rates, Fan's and Azizi's figures, findings.
# The mixed classifiers themselves are ordinary train_classifier/evaluate jobs (sources mix/real{R}/...).


rule mix_exchange_rate:
    input:
        summary=PLAN.summary,
    output:
        exchange=report(
            MIX_OUTPUTS["exchange"],
            caption="../report/mix_exchange_table.rst",
            category="Real + synthetic",
            labels={"table": "exchange rate"},
        ),
        effects=report(
            MIX_OUTPUTS["effects"],
            caption="../report/mix_effects.rst",
            category="Real + synthetic",
            labels={"table": "mixed vs real only"},
        ),
    log:
        PLAN.log("mix_exchange_rate"),
    localrule: True
    conda:
        "../envs/synthscale.yaml"
    params:
        mix=MIX_PARAMS,
        seed=config["seed"],
    script:
        "../scripts/mix_exchange_rate.py"


rule plot_mix:
    input:
        summary=PLAN.summary,
        exchange=MIX_OUTPUTS["exchange"],
        manifest=PLAN.manifest,
    output:
        scarce=report(
            MIX_OUTPUTS["scarce"],
            caption="../report/mix_scarce_real.rst",
            category="Real + synthetic",
            labels={"figure": "scarce real (Fan et al.)"},
        ),
        augment=report(
            MIX_OUTPUTS["augment"],
            caption="../report/mix_augmentation.rst",
            category="Real + synthetic",
            labels={"figure": "augmenting all real (Azizi et al.)"},
        ),
        exchange=report(
            MIX_OUTPUTS["exchange_plot"],
            caption="../report/mix_exchange_rate.rst",
            category="Real + synthetic",
            labels={"figure": "exchange rate"},
        ),
    log:
        PLAN.log("plot_mix"),
    localrule: True
    conda:
        "../envs/synthscale.yaml"
    params:
        mix=MIX_PARAMS,
    script:
        "../scripts/plot_mix.py"


rule mix_findings:
    input:
        effects=MIX_OUTPUTS["effects"],
        exchange=MIX_OUTPUTS["exchange"],
    output:
        report(
            MIX_OUTPUTS["findings"],
            caption="../report/mix_findings.rst",
            category="Real + synthetic",
            labels={"page": "findings"},
        ),
    log:
        PLAN.log("mix_findings"),
    localrule: True
    conda:
        "../envs/synthscale.yaml"
    params:
        study=config["study"],
    script:
        "../scripts/mix_findings.py"
