"""What a job loads beyond its own wildcards' files (Plan's input methods, which rules/common.smk's
input functions hand on): a generator's folders, a fine-tuned generator's base, the judge's weights,
a filter's scorer, the shards a classifier, CLIP or filter job waits for. A file the study makes must be
an input (so its job runs first); a Hub id or an outside path must not (Snakemake would look for it as a
file). Also what rule all builds (Plan.targets) and the decisions behind a few params and wildcard regexes."""
from __future__ import annotations

import copy

import pytest
import yaml

from synthscale.study.config import check_config
from synthscale.clip.names import local_dir
from synthscale.study.plan import Plan
from synthscale.study.sources import Source, parse_source


@pytest.fixture(scope="module")
def cfg():
    with open("config.yaml") as f:
        return check_config(yaml.safe_load(f))


@pytest.fixture(scope="module", params=["config.yaml", "configs/test.yaml"])
def study(request) -> Plan:
    """The default study's Plan, and the test study's (configs/test.yaml laid over config.yaml, as
    Snakemake's --configfile lays it)."""
    from snakemake.utils import update_config

    with open("config.yaml") as f:
        raw = yaml.safe_load(f)
    if request.param != "config.yaml":
        with open(request.param) as f:
            update_config(raw, yaml.safe_load(f))
    return Plan(check_config(raw))


def plan_with(cfg, generators=None, judge=None, train=None, filter_specs=None, **sections) -> Plan:
    """A Plan over the checked default config with sections replaced (past the config check): `train` and
    `filter_specs` update theirs, a section named by keyword (generation={...}) is laid over its own."""
    c = copy.deepcopy(cfg)
    for key, value in sections.items():
        c[key] = {**c[key], **value} if isinstance(c.get(key), dict) and isinstance(value, dict) else value
    base = {g["name"]: g for g in c["generators"]}
    if generators is not None:
        c["generators"] = [{**base.get(g.pop("like", None), {}), **g} for g in copy.deepcopy(generators)]
    if judge is not None:
        c["quality"]["judge"] = judge
    c["train"].update(train or {})
    c["filter_specs"].update(filter_specs or {})
    return Plan(c)


def test_a_study_made_generator_is_an_input_and_a_pretrained_one_is_not(cfg):
    plan = plan_with(cfg, generators=[
        {"like": "tinydigits", "name": "trained"},
        {"like": "tinydigits-ft", "name": "full-ft", "base": "trained"},
        {"name": "hub", "kind": "pretrained", "source": "org/model"},
    ])  # fmt: skip
    assert plan.generator_inputs("trained") == [plan.generator_dir("trained")]
    assert plan.generator_inputs("full-ft") == [plan.generator_dir("full-ft")]  # full weights: its own folder
    assert plan.generator_inputs("hub") == []


@pytest.mark.parametrize("base, made_here", [("trained", True), ("hub", False), ("org/outside", False)])
def test_a_lora_loads_over_its_base_which_is_an_input_only_when_the_study_makes_it(cfg, base, made_here):
    lora = {"like": "tinydigits-ft", "name": "lora", "base": base}
    plan = plan_with(cfg, generators=[
        {"like": "tinydigits", "name": "trained"},
        {"name": "hub", "kind": "pretrained", "source": "org/model"},
        lora,
    ])  # fmt: skip
    plan.generator("lora")["finetune"] = {**plan.generator("lora")["finetune"], "mode": "lora"}
    own = [plan.generator_dir("lora")]
    assert plan.generator_inputs("lora") == own + ([plan.generator_dir(base)] if made_here else [])
    assert plan.finetune_base_inputs("lora") == ([plan.generator_dir(base)] if made_here else [])
    # what the base loads from: the study's folder, a pretrained generator's source, or the name as given
    expected = {"trained": plan.generator_dir("trained"), "hub": "org/model", "org/outside": "org/outside"}
    assert plan.finetune_base_source("lora") == expected[base]


@pytest.mark.parametrize("judge, real_full, expected", [
    ({"kind": "trained", "recipe": {}}, True, "full-real classifier"),
    ({"kind": "trained", "recipe": {}}, False, "judge"),
    ({"kind": "trained", "recipe": {"epochs": 3}}, True, "judge"),
    ({"kind": "timm", "name": "resnet18", "weights": "weights/r18.safetensors"}, True, "weights/r18.safetensors"),
    ({"kind": "timm", "name": "resnet18"}, True, None),
])  # fmt: skip
def test_the_judge_input_is_the_file_it_loads(cfg, judge, real_full, expected):
    """A trained judge with the training recipe unchanged is the full-real classifier (when that one is
    trained anyway); with its own recipe, its own job's weights; a timm judge, its local file or none."""
    plan = plan_with(cfg, judge=judge, train={"real_full": real_full})
    named = {"full-real classifier": plan.model("real", "all"), "judge": plan.judge_model}
    assert plan.judge_inputs() == ([named.get(expected, expected)] if expected else [])


def test_a_filters_scorer_files_are_its_inputs(cfg, tmp_path):
    clip = {"kind": "clip", "keep_fraction": 0.5, "overgenerate": 2.0}
    plan = plan_with(cfg, filter_specs={
        "local": {**clip, "clip": {"model": f"local-dir:{tmp_path}/clip", "pretrained": None}},
        "weights": {**clip, "clip": {"model": "ViT-B-32", "pretrained": "w/vitb32.bin"}},
    })  # fmt: skip
    assert plan.filter_clip_inputs("local") == [f"{tmp_path}/clip/open_clip_config.json"]
    assert plan.filter_clip_inputs("weights") == ["w/vitb32.bin"]
    assert plan.filter_clip_inputs("conf") == [] and plan.filter_judge_inputs("conf") == plan.judge_inputs()
    assert plan.filter_judge_inputs("local") == []
    assert local_dir("local-dir:a/b") == "a/b" and local_dir("ViT-B-32") is None


# --- the shards a training job waits for ---
BLOCKS = {"shard_size": 10, "images_per_job": 100}  # 10 shards per generation job
SET = "synthetic/tinydigits-ft/g2/classname"


def test_a_classifier_waits_for_one_shard_per_generation_job_and_the_manifest_when_it_reads_real(cfg):
    """Under blocks of 10 shards, 300 synthetic images are 30 shards in 3 jobs: 3 inputs (the job reads
    all 30 from its params); real and mixed runs also read the manifest; a filtered set is no job's block."""
    plan = plan_with(cfg, generation=BLOCKS)
    folder = plan.synthetic_dir("tinydigits-ft", 2.0, "classname")
    heads = [f"{folder}/shard-0000{k}0.tar" for k in range(3)]
    assert plan.train_inputs(SET, "300") == heads
    assert plan.train_inputs(f"mix/real30/{SET}", "300") == heads + [plan.manifest]
    assert plan.train_inputs("real", "30") == [plan.manifest] == plan.train_inputs("real", "all")
    filtered = Source("synthetic", "tinydigits-ft", 2.0, "classname", "conf")
    assert plan.train_inputs(f"{SET}/f-conf", "300") == plan.set_shards(filtered, 300)  # all 30
    # one shard per job (the default): every shard
    one = plan_with(cfg, generation={"shard_size": 10, "images_per_job": None})
    assert one.train_inputs(SET, "300") == one.shards("tinydigits-ft", 2.0, "classname", 300)


@pytest.mark.parametrize("source", [SET, "mixed/tinydigits-ft/g2/classname"])
def test_a_clip_run_names_every_shard_it_captions(cfg, source):
    """Unlike a classifier (block heads), the clip_pairs job reads its shard list from this input, so it
    must name every one of the first ceil(N/S) shards, blocks or not; a real CLIP names none."""
    plan = plan_with(cfg, generation=BLOCKS)
    every = plan.shards("tinydigits-ft", 2.0, "classname", 250)
    assert len(every) == 25 and plan.clip_train_inputs(source, "250") == every
    assert plan.clip_train_inputs("real", "250") == []


def test_a_filter_reads_overgenerated_shards_and_its_quality_job_the_filtered_ones(cfg):
    """conf keeps the largest N in full shards (2 x 150) from twice as many generated (4 shards); its
    quality job reads the filtered set's first quality_n images; no filter on the axis: no shard outputs."""
    plan = plan_with(cfg)
    assert plan.filter_source_shards("tinydigits-ft", "2", "classname", "conf") == plan.shards(
        "tinydigits-ft", 2.0, "classname", 600
    )
    filtered = Source("synthetic", "tinydigits-ft", 2.0, "classname", "conf")
    assert plan.filtered_source("tinydigits-ft", "2", "classname", "conf") == filtered
    assert plan.filter_quality_shards("tinydigits-ft", "2", "classname", "conf") == plan.set_shards(
        filtered, plan.quality_n
    )
    assert [p.rsplit("/", 2)[-2:] for p in plan.filter_shard_outputs()] == [
        ["f-{filter}", "shard-000000.tar"], ["f-{filter}", "shard-000001.tar"]
    ]  # fmt: skip
    assert plan_with(cfg, filters=["none"]).filter_shard_outputs() == []


# --- rule all ---


def test_the_classifier_arm_brings_its_tables_cost_and_findings_and_without_it_none(cfg):
    plan, unsupervised = plan_with(cfg), plan_with(cfg, train={"supervised": False})
    classifier = {plan.summary, plan.scaling, plan.findings, plan.plot("scaling_loss")}
    cost = set(plan.cost_outputs().values())
    assert classifier | cost <= set(plan.targets())
    assert not (classifier | cost) & set(unsupervised.targets())
    assert plan.classifier_tables() == {"summary": plan.summary, "eval_per_class": plan.per_class}
    assert unsupervised.classifier_tables() == {}
    assert set(plan.quality_outputs().values()) <= set(unsupervised.targets())  # quality runs either way


def test_filter_mix_and_clip_outputs_are_targets_only_when_their_stage_runs(cfg):
    plan = plan_with(cfg)
    stages = [plan.filter_outputs(), plan.mix_outputs()]
    assert all(set(o.values()) <= set(plan.targets()) for o in stages)
    assert set(plan.clip_targets()) <= set(plan.targets())
    off = plan_with(cfg, filters=["none"], mix={"real_n": []}, clip={"enabled": False})
    assert off.filter_targets() == off.mix_targets() == off.clip_targets() == []
    assert not any(set(o.values()) & set(off.targets()) for o in stages)
    assert len(plan.targets()) == len(set(plan.targets()))  # each target once
    assert [plan.sample_grid(s) for s in plan.synthetic_grid()] == [t for t in plan.targets() if "/samples/" in t]


# --- quality, generation and mix parameters ---


def test_inception_weights_are_an_input_only_in_inception_features(cfg):
    assert plan_with(cfg, quality={"features": "judge", "inception_weights": "w/inc.pth"}).inception_inputs() == []
    assert plan_with(cfg, quality={"features": "inception", "inception_weights": "w/inc.pth"}).inception_inputs() == [
        "w/inc.pth"
    ]


def test_a_generation_job_is_not_rerun_for_a_changed_throughput_figure(cfg):
    plan = plan_with(cfg)
    plan.generator("tinydigits")["images_per_second"] = 4.0
    spec = plan.generation_spec("tinydigits")
    assert "images_per_second" not in spec
    assert spec == {k: v for k, v in plan.generator("tinydigits").items() if k != "images_per_second"}
    assert plan_with(cfg, mix={"full_real_n": 1203}).mix_params() == {
        k: v for k, v in cfg["mix"].items() if k != "full_real_n"
    }


def test_a_generator_regex_matches_exactly_the_names_of_its_kind(cfg):
    import re

    plan = plan_with(cfg, generators=[
        {"like": "tinydigits", "name": "a.b"},
        {"like": "tinydigits", "name": "c"},
        {"like": "tinydigits-ft", "name": "a.b-ft", "base": "a.b"},
    ])  # fmt: skip
    trained = re.compile(plan.generator_regex("trained"))
    assert [n for n in ("a.b", "c", "a.b-ft", "axb") if trained.fullmatch(n)] == ["a.b", "c"]
    assert re.compile(plan.generator_regex("finetuned")).fullmatch("a.b-ft")
    assert re.compile(plan.generator_regex("pretrained")).fullmatch("") is None
    assert plan.caption_prompts("c") == [plan.prompts(s) for s in plan.generator("c")["caption_strategies"]]
    assert plan.finetune_prompts("a.b-ft") == [plan.prompts("classname")]


def test_the_quality_summary_reads_each_synthetic_sets_files_once_in_grid_order(cfg):
    plan = plan_with(cfg)
    grid = plan.synthetic_grid()
    assert len(grid) == 12 and plan.quality_jsons() == [plan.quality_json(s.generator, s.guidance, s.strategy) for s in grid]
    assert plan.quality_per_class_files() == [p[: -len(".json")] + "_per_class.csv" for p in plan.quality_jsons()]


# --- what a rule hands its job as lists: Plan methods the rules forward to ---


def test_an_evaluation_job_reads_every_model_of_its_source_each_beside_its_n_and_seed(study):
    """Rule evaluate: `models` (input), `n_labels` and `seeds` (params), which evaluate_models zips. Every
    model a train_classifier job makes is evaluated once, by its own source's job, at the position
    whose N label and seed are its own; N-major, as the rule's former comprehensions over seed_runs."""
    trained = {(s, n, seed) for s, n in study.runs() + study.filter_runs() for seed in study.seeds_for(s, n)}
    evaluated = []
    for source in study.sources() + study.filtered_sources():
        models, labels, seeds = study.models(source), study.model_n_labels(source), study.model_seeds(source)
        assert models == [study.model(source, n, s) for n, s in zip(labels, seeds, strict=True)]
        assert models == [study.model(source, n, s) for n, s in study.seed_runs(source)]  # the former rule
        assert labels == [n for n, _ in study.seed_runs(source)] and seeds == [s for _, s in study.seed_runs(source)]
        assert labels == sorted(labels, key=study.n_labels(source).index)  # N-major
        evaluated += [(source, n, s) for n, s in zip(labels, seeds)]
    assert len(evaluated) == len(set(evaluated)) and set(evaluated) == trained


def test_a_clip_evaluation_job_reads_every_clip_of_its_source_each_beside_its_n_and_seed(study):
    """Rule evaluate_clip: `models`, `n_labels` and `seeds`, zipped by evaluate_clip_models: each CLIP a
    train_clip job makes, once, at the position of its own N label and seed."""
    evaluated = []
    for source in study.clip_sources():
        models = study.clip_models(source)
        labels, seeds = study.model_n_labels(source, clip=True), study.model_seeds(source, clip=True)
        assert models == [study.clip_model(source, n, s) for n, s in zip(labels, seeds, strict=True)]
        assert models == [study.clip_model(source, n, s) for n, s in study.clip_seed_runs(source)]  # the former rule
        evaluated += [(source, n, s) for n, s in zip(labels, seeds)]
    assert evaluated and len(evaluated) == len(set(evaluated)) and evaluated == study.clip_runs()
    assert study.all_clip_eval() == [study.clip_eval_csv(s) for s in study.clip_sources()]


def test_the_filter_report_reads_each_filtered_sets_files_in_its_own_row(cfg):
    """Rule filter_report: five input lists and the `sources` param, which filter_table zips: entry i of
    every list belongs to source i (its counts, its quality and CAS, its unfiltered set's quality and
    CAS), in the order of the script's arguments; the former rule comprehensions give the same lists."""
    plan = plan_with(cfg, filters=["none", "conf", "loose"],
                     filter_specs={"loose": {**cfg["filter_specs"]["conf"], "generators": None, "guidance": None,
                                             "strategies": None, "threshold": 0.2}})
    grid, sources, inputs = plan.filtered_grid(), plan.filtered_sources(), plan.filter_report_inputs()
    assert len(sources) == 1 + len(plan.synthetic_grid()) and sources == [s.name for s in grid]
    assert list(inputs) == ["counts", "quality", "base_quality", "cas", "base_cas"]
    assert all(len(files) == len(sources) for files in inputs.values())
    for i, name in enumerate(sources):
        src = parse_source(name)
        assert src.filter in ("conf", "loose")
        assert inputs["counts"][i] == f"{plan.filtered_dir(src)}/counts.json"
        assert inputs["quality"][i] == plan.filter_quality_json(src)
        assert inputs["base_quality"][i] == plan.quality_json(src.generator, src.guidance, src.strategy)
        assert inputs["cas"][i] == plan.eval_csv(name) and inputs["base_cas"][i] == plan.eval_csv(src.unfiltered.name)
    former = {
        "counts": [plan.filter_counts(s) for s in grid],
        "quality": [plan.filter_quality_json(s) for s in grid],
        "base_quality": [plan.quality_json(s.generator, s.guidance, s.strategy) for s in grid],
        "cas": [plan.eval_csv(s.name) for s in grid],
        "base_cas": [plan.eval_csv(s.unfiltered.name) for s in grid],
    }
    assert inputs == former
    assert plan_with(cfg, filters=["none"]).filter_report_inputs() == {k: [] for k in former}


def test_the_params_a_rule_forwards_are_the_configs_and_the_shards_a_set_job_reads_its_first(study):
    """Eval sets by name in config order (every evaluation job), their ood flags (the summary and the
    CLIP report), the CLIP findings' reference (the first set), a classifier's mix spec (mode and
    synthetic_prob only), and the shards a quality job and a sample grid read: the set's first."""
    cfg = study.cfg
    assert study.eval_set_names() == [e["name"] for e in cfg["eval_sets"]]
    assert study.eval_set_ood() == {e["name"]: e["ood"] for e in cfg["eval_sets"]}
    assert study.clip_reference_set() == cfg["eval_sets"][0]["name"]
    assert study.train_mix() == {"mode": cfg["mix"]["mode"], "synthetic_prob": cfg["mix"]["synthetic_prob"]}
    for src in study.synthetic_grid():
        shards = study.quality_shards(src.generator, src.guidance, src.strategy)
        every = study.shards(src.generator, src.guidance, src.strategy, study.max_n)
        assert shards == every[: len(shards)] == study.shards(src.generator, src.guidance, src.strategy, study.quality_n)
        assert study.sample_shard(src) == every[0] == f"{study.synthetic_dir(src.generator, src.guidance, src.strategy)}/shard-000000.tar"
    plan = Plan({**cfg, "prompt_models": {"w2s": {"kind": "word2sen", "model": "m"}}})
    assert plan.prompt_model("w2s") == {"kind": "word2sen", "model": "m"}
