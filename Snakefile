# synthscale: scaling laws of synthetic training images (Fan et al. 2023, Azizi et al. 2023).
# This file only loads and checks the config, includes one rules file per stage and names the targets.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/prompts.smk"
include: "rules/generators.smk"
include: "rules/generate.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/quality.smk"
include: "rules/analysis.smk"
include: "rules/filter.smk"
include: "rules/clip.smk"
include: "rules/mix.smk"


# local CPU runs: jobs fork from one process that has imported torch & co. (synthscale/warm.py)
WARM = []


onstart:
    if warm.wanted(
        config, workflow.local_exec, workflow.deployment_settings.deployment_method
    ):
        WARM.append(warm.start())


onsuccess:
    warm.stop(*WARM)


onerror:
    warm.stop(*WARM)


rule all:
    default_target: True
    input:
        all_targets(),
