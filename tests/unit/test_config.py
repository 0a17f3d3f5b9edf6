"""Bad input stops before any job, with one line naming the problem."""
import copy

import pytest

from synthscale.study.config import ConfigError, check_config, load_config


def test_default_config_is_valid_and_gets_defaults(default_raw):
    cfg = check_config(default_raw)
    assert cfg["train"]["eval_batch_size"] == 256
    assert cfg["resources"]["evaluate"]["threads"] == 1
    assert cfg["resources"]["train_generator"]["threads"] == 1
    assert cfg["resources"]["train_generator"]["mem_mb"] == 4000
    assert cfg["generators"][0]["dtype"] == "auto"  # float32 on the CPU, bfloat16 on a GPU


@pytest.mark.parametrize(
    "edit,expected",
    [
        (lambda c: c.update(guidance="high"), "config key guidance"),
        (lambda c: c["train"].update(arch="resnet_does_not_exist"), "not a timm model"),
        (lambda c: c.update(strategies=["classname", "wordsalad"]), "unknown prompt strategy 'wordsalad'"),
        (lambda c: c.update(n_images=[0, 10]), "config key n_images.0"),
        (lambda c: c.update(typo_key=1), "typo_key"),
        (lambda c: c["generators"].append({"name": "sd", "kind": "pretrained"}), "generators.sd.source"),
        (
            lambda c: c.update(dataset={"name": "inet", "kind": "imagefolder", "train_dir": "/nowhere/train",
                                        "test_dir": "/nowhere/val", "classes_csv": "/nowhere/c.csv"}),
            "dataset.train_dir: path '/nowhere/train' does not exist",
        ),
        (
            lambda c: c["generators"].append({"name": "sd", "kind": "pretrained", "source": "./no/such/pipe"}),
            "no diffusers pipeline",
        ),
        (lambda c: c.setdefault("quality", {}).update(reference_set="tset"),
         "config key quality.reference_set: 'tset' is not an eval set"),
        (lambda c: c.setdefault("analysis", {}).update(eval_set="val"), "config key analysis.eval_set: 'val'"),
        (lambda c: c.update(results=""), "config key results"),
        (lambda c: c.update(results="/"), "config key results"),
        (lambda c: c["generators"][0]["arch"].update(attention_head_dim=12),
         "config key generators.tinydigits.arch.attention_head_dim: 12 channels per head do not divide unet width 32"),
        (lambda c: c["generators"][0]["arch"].update(norm_groups=5),
         "config key generators.tinydigits.arch.norm_groups: 5 does not divide unet width 16"),
        (lambda c: c["generators"][0]["arch"].update(text_heads=3),
         "config key generators.tinydigits.arch.text_heads: 3 does not divide text_width 64"),
    ],
)
def test_bad_config_names_the_key(default_raw, edit, expected):
    cfg = copy.deepcopy(default_raw)
    edit(cfg)
    with pytest.raises(ConfigError, match=expected) as err:
        check_config(cfg)
    assert "\n" not in str(err.value)


def test_malformed_yaml_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: {name: digits\nguidance: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_config(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "quality,expected",
    [
        ({"judge": {"kind": "timm"}}, "config key quality.judge.name: a timm model name is required"),
        ({"judge": {"kind": "timm", "name": "resnet18", "weights": "/nowhere/judge.safetensors"}},
         "config key quality.judge.weights: file '/nowhere/judge.safetensors' does not exist"),
        ({"features": "inception"}, "config key quality.inception_weights: a local Inception weights file is required"),
        ({"features": "inception", "inception_weights": "/nowhere/pt_inception.pth"},
         "config key quality.inception_weights: file '/nowhere/pt_inception.pth' does not exist"),
    ],
)
def test_bad_quality_config_names_the_key(default_raw, quality, expected):
    cfg = copy.deepcopy(default_raw)
    cfg["quality"] = quality
    with pytest.raises(ConfigError, match=expected) as err:
        check_config(cfg)
    assert "\n" not in str(err.value)


def test_present_quality_weights_pass(default_raw, tmp_path):
    (tmp_path / "judge.safetensors").write_bytes(b"x")
    (tmp_path / "inception.pth").write_bytes(b"x")
    cfg = copy.deepcopy(default_raw)
    cfg["quality"] = {"judge": {"kind": "timm", "name": "resnet18", "weights": "judge.safetensors"},
                      "features": "inception", "inception_weights": "inception.pth"}
    assert check_config(cfg, tmp_path)["quality"]["n_images"] == 10000


def test_supervised_off_plans_no_classifier(default_raw):
    """train.supervised: false (a CLIP-only study) turns off every classifier, real baselines included;
    what needs a classifier (mixed classifiers, filters compared by CAS) is an error naming its key."""
    from synthscale.study.plan import Plan

    cfg = copy.deepcopy(default_raw)
    cfg["train"]["supervised"] = False
    cfg["mix"]["real_n"] = []
    cfg["filters"] = ["none"]
    checked = check_config(cfg)
    plan = Plan(checked)
    # the quality judge then cannot be the full-real classifier: it is trained on its own
    assert not checked["train"]["real_full"] and not checked["train"]["real_baseline"]
    assert plan.runs() == [] and plan.sources() == [] and not plan.supervised
    assert plan.synthetic_grid(), "the synthetic sets are still generated (quality, CLIP)"
    assert Plan(check_config(copy.deepcopy(default_raw))).runs(), "on by default"
    for key, edit in [("mix.real_n", {"filters": ["none"]}), ("filters", {"mix": {**cfg["mix"], "real_n": []}})]:
        bad = copy.deepcopy(default_raw)
        bad["train"]["supervised"] = False
        bad.update(edit)
        with pytest.raises(ConfigError, match=f"config key {key}: .*train.supervised is false"):
            check_config(bad)


def test_eval_set_keys_default_to_the_first_eval_set(default_raw):
    """quality.reference_set and analysis.eval_set name prepared splits; unset, they take the first eval
    set, so a study whose sets are named e.g. `val` (configs/fan-clip.yaml) needs no `test`."""
    cfg = copy.deepcopy(default_raw)
    cfg["eval_sets"] = [{"name": "val"}, {"name": "val-rotated", "ood": True, "shift": {"kind": "rotate", "degrees": 30}}]
    checked = check_config(cfg)
    assert checked["quality"]["reference_set"] == "val" and checked["analysis"]["eval_set"] == "val"
    cfg = copy.deepcopy(default_raw)
    cfg["quality"] = {"reference_set": "test-rotated"}
    assert check_config(cfg)["quality"]["reference_set"] == "test-rotated"


def test_a_generation_block_must_fit_its_time_limit_at_the_stated_throughput(default_raw):
    """generators[].images_per_second sizes the generate time limit: a block that cannot finish in it
    (it would be killed at the same point on every retry) is a config error naming the key."""
    raw = copy.deepcopy(default_raw)
    raw["generation"].update(shard_size=100, images_per_job=10_000)
    raw["resources"]["generate"] = {"runtime": 60}
    raw["generators"][0]["images_per_second"] = 10.0  # 10k images: ~17 min, x1.25 + load: under 60
    check_config(copy.deepcopy(raw))
    raw["generators"][0]["images_per_second"] = 2.0  # ~83 min of images alone
    with pytest.raises(ConfigError, match="resources.generate.runtime: 60 min is under the .*images_per_second"):
        check_config(copy.deepcopy(raw))
    raw["resources"]["generate"] = {"runtime": 200}
    check_config(copy.deepcopy(raw))
    raw["resources"]["generate"]["max_runtime"] = 90  # the partition's limit: lower images_per_job instead
    with pytest.raises(ConfigError, match="resources.generate.runtime: 200 min is over its max_runtime of 90"):
        check_config(copy.deepcopy(raw))


def test_a_retried_job_gets_a_longer_time_limit_up_to_the_cap(default_raw):
    """Snakemake calls the runtime with the attempt: a job killed at its limit is retried with more."""
    from synthscale.study.plan import Plan

    raw = copy.deepcopy(default_raw)
    raw["resources"]["prepare"] = {"runtime": 60, "threads": 8, "max_runtime": 120}
    raw["resources"]["judge"] = {"runtime": 60, "retry_runtime_factor": 1}
    plan = Plan(check_config(raw))
    runtime = plan.resources("prepare")["runtime"]
    assert [runtime(None, attempt=a) for a in (1, 2, 3)] == [60, 90, 120]
    assert plan.resources("prepare")["cpus_per_task"] == 8
    assert [plan.resources("judge")["runtime"](None, attempt=a) for a in (1, 2)] == [60, 60]
    import inspect

    assert "attempt" in inspect.signature(runtime).parameters, "Snakemake passes attempt by name"
    raw["resources"]["prepare"]["runtime"] = 150
    with pytest.raises(ConfigError, match="resources.prepare.runtime: 150 min is over its max_runtime of 120"):
        check_config(raw)


def test_a_generator_may_set_its_own_batch_size(default_raw):
    from synthscale.study.plan import Plan

    raw = copy.deepcopy(default_raw)
    raw["generation"]["batch_size"] = 64
    raw["generators"][0]["batch_size"] = 8  # e.g. SDXL at 1024 px
    plan = Plan(check_config(raw))
    first, *rest = [g["name"] for g in plan.cfg["generators"]]
    assert plan.generation_batch_size(first) == 8
    assert rest and all(plan.generation_batch_size(g) == 64 for g in rest)


def test_one_process_stages_take_their_multi_gpu_parent_with_one_gpu_when_unnamed(default_raw):
    """train_judge and evaluate_clip run one process: a config that names only train and clip (as
    configs did before the judge and clip_eval stages) gives them those resources with one GPU."""
    raw = copy.deepcopy(default_raw)
    raw["resources"].update(train={"threads": 64, "gpu": 8, "mem_mb": 256000}, clip={"gpu": 8, "runtime": 4320})
    raw["clip"]["enabled"] = False  # its tiny N cannot feed 8 ranks (test_clip_batches_feed_every_loader_of_every_rank)
    res = check_config(copy.deepcopy(raw))["resources"]
    assert res["judge"]["gpu"] == 1 and res["judge"]["threads"] == 64 and res["judge"]["mem_mb"] == 256000
    assert res["clip_eval"]["gpu"] == 1 and res["clip_eval"]["runtime"] == 4320
    raw["resources"]["judge"] = {"gpu": 0}
    assert check_config(raw)["resources"]["judge"]["gpu"] == 0


def test_clip_batches_feed_every_loader_of_every_rank(default_raw):
    """open_clip_train's loaders (clip.workers, at least 1, on each of resources.clip.gpu ranks) each
    batch only the shards dealt to them, dropping a partial batch: a share under one clip.batch_size
    yields nothing (under DDP a hang), so the check refuses any N where the smallest share a loader can
    be dealt is under a batch, before any job runs, naming the key."""
    raw = copy.deepcopy(default_raw)
    raw["clip"].update(n_images=[250_000, 500_000], shard_size=10_000, workers=8, batch_size=512, mixed=False)
    raw["n_images"] = [500_000]
    raw["resources"]["clip"] = {"gpu": 8}  # fan-clip's: 3906 pairs for each of 64 loaders
    check_config(copy.deepcopy(raw))
    raw["clip"]["batch_size"] = 4096
    with pytest.raises(ConfigError, match=r"config key clip.batch_size: at N = 250000 a loader can be dealt 3906 "
                                          r"pairs, fewer than one batch of 4096 \(64 loaders: clip.workers 8, at least "
                                          r"1, x resources.clip.gpu 8;") as err:
        check_config(copy.deepcopy(raw))
    assert "\n" not in str(err.value)
    raw["resources"]["clip"] = {"gpu": 2}  # 16 loaders of 15,625 pairs
    check_config(copy.deepcopy(raw))
    raw["clip"].update(workers=0, batch_size=200_000)  # no workers: each rank is its loader, 2 x 200k > 250k
    with pytest.raises(ConfigError, match=r"at N = 250000 a loader can be dealt 124995 pairs"):
        check_config(copy.deepcopy(raw))
    raw["clip"]["batch_size"] = 120_000
    check_config(copy.deepcopy(raw))
    # N = 10 on 2 loaders in batches of 5 fills 2 batches, but shards of at most 3 are [3, 3, 2, 2]: a
    # loader dealt both 2s holds 4 pairs, no batch (open_clip_train's own loader shows it: issue 18 review)
    raw["clip"].update(n_images=[10], workers=2, batch_size=5, shard_size=3)
    raw["n_images"] = [10]
    raw["resources"]["clip"] = {"gpu": 1}
    with pytest.raises(ConfigError, match=r"at N = 10 a loader can be dealt 4 pairs, fewer than one batch of 5"):
        check_config(copy.deepcopy(raw))
    raw["clip"]["shard_size"] = 5  # [5, 5]: each loader holds a batch
    check_config(copy.deepcopy(raw))
