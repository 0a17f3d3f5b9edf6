# Stage 3: text prompts per class, one file per strategy. Rule-based strategies are functions of
# the class table; model-made ones (prompt_models: Word2Sen, IN-Caption, LLM) are jobs of their
# own, with the "prompts" resources (a GPU for a large model).
import re

from synthscale.prompts import STRATEGIES


def _alternatives(names):
    """A wildcard regex matching exactly these names (one that matches nothing when empty)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


rule prompts:
    input:
        classes=PLAN.classes,
    output:
        PLAN.prompts("{strategy}"),
    log:
        f"{R}/logs/prompts/{{strategy}}.log",
    wildcard_constraints:
        strategy=_alternatives(STRATEGIES),
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
        f"{R}/logs/prompts/{{strategy}}.log",
    benchmark:
        f"{R}/benchmarks/prompts_model/{{strategy}}.tsv"
    wildcard_constraints:
        strategy=_alternatives(config["prompt_models"]),
    conda:
        "../envs/synthscale.yaml"
    threads: threads("prompts")
    resources:
        **res("prompts"),
    params:
        spec=lambda wc: config["prompt_models"][wc.strategy],
        device=config["device"],
        threads=threads("prompts"),
    script:
        "../scripts/prompts.py"
