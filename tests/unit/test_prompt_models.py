"""Model-made prompt strategies on tiny random models built from configs, with offline tokenizers
(tests/helpers/tiny_prompt_models.py): a T5 (word2sen), a GPT-2 (llm) and a BLIP captioner (caption), and
their config checks. Their jobs run through Snakemake in tests/workflow/test_prompt_models_workflow.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from helpers import REPO
from synthscale.study.config import ConfigError, check_config

torch.set_num_threads(1)


def classes() -> pd.DataFrame:
    from synthscale.data.real import digits_classes

    return digits_classes().head(3)


def spec(kind: str, model: Path, **kw) -> dict:
    """A prompt_models entry with the schema's defaults filled in."""
    cfg = yaml.safe_load((REPO / "configs/test.yaml").read_text())
    cfg["prompt_models"] = {"m": {"kind": kind, "model": str(model), **kw}}
    return check_config(cfg)["prompt_models"]["m"]


def test_schema_fills_the_papers_defaults_per_kind(tiny_prompt_models):
    w = spec("word2sen", tiny_prompt_models["t5"])
    assert (w["count"], w["template"], w["sampling"]["do_sample"]) == (200, "{name}", True)
    c = spec("caption", tiny_prompt_models["blip"])
    assert c["format"] == "a photo of {name}, {text}" and c["max_new_tokens"] == 16
    assert c["sampling"] == {"do_sample": False} and c["images_per_class"] == 50
    assert spec("llm", tiny_prompt_models["gpt2"])["count"] == 50


def test_word2sen_samples_dedupes_and_is_reproducible(tiny_prompt_models):
    from synthscale.prompts.models import build_pools

    s = spec("word2sen", tiny_prompt_models["t5"], count=6, batch_size=8, max_new_tokens=6, max_rounds=3,
             format="{name}: {text}")
    a = build_pools(s, classes(), seed=0, progress=False)
    b = build_pools(s, classes(), seed=0, progress=False)
    assert [p["prompts"] for p in a] == [p["prompts"] for p in b]
    for pool, name in zip(a, ["zero", "one", "two"]):
        ps = pool["prompts"]
        assert 1 <= len(ps) <= 6 and pool["kept"] == len(ps) and pool["generated"] >= len(ps)
        assert all(p.startswith(f"{name}: ") for p in ps)
        assert len({p.lower() for p in ps}) == len(ps), "deduplicated"
    other = build_pools(s, classes(), seed=1, progress=False)
    assert [p["prompts"] for p in other] != [p["prompts"] for p in a]


def test_llm_pool_and_jsonl_that_generation_reads(tiny_prompt_models, tmp_path):
    from synthscale.generation.generate import image_spec
    from synthscale.prompts.models import build_pools, write_model_prompts
    from synthscale.prompts.strategies import read_prompts

    s = spec("llm", tiny_prompt_models["gpt2"], count=4, batch_size=6, max_new_tokens=5, max_rounds=2)
    pools = build_pools(s, classes(), seed=3, progress=False)
    out = tmp_path / "llm.jsonl"
    report = write_model_prompts(out, "llm", s, pools)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2] and all(r["kind"] == "llm" for r in rows)
    assert report["classes"] == 3
    assert set(report["short"]) == {r["name"] for r in rows if r["kept"] < 4}
    pools_read = read_prompts(out)
    # the pools hold the model's text, not the class-name fallback: round one of each class's pool is
    # what the model samples from that class's seed, deduplicated, in order
    from transformers import set_seed

    from synthscale.prompts.models import TextSampler, _fill, dedupe, named

    sampler = TextSampler(str(tiny_prompt_models["gpt2"]), chat=True)
    assert report["empty"] == []
    for row, pool in zip(classes().to_dict("records"), pools_read):
        set_seed(3 + row["index"])
        first = dedupe(sampler(_fill(s["template"], row), 6, 5, dict(s["sampling"])))
        assert first and pool[: len(first)] == [named(t, row["name"]) for t in first][:4], (pool, first)
        assert pool != [row["name"]] and all(row["name"] in p and len(p) > len(row["name"]) + 2 for p in pool)
    # per-image assignment stays a function of (seed, index)
    spec5 = image_spec(5, pools_read, 1234)
    assert spec5.label == 2 and spec5.prompt in pools_read[2]


def test_an_empty_pool_falls_back_to_the_class_name(tmp_path):
    from synthscale.prompts.models import write_model_prompts

    rows = classes().to_dict("records")
    pools = [{"row": r, "prompts": [] if r["index"] == 1 else ["x"], "generated": 3, "kept": 0 if r["index"] == 1 else 1} for r in rows]
    report = write_model_prompts(tmp_path / "p.jsonl", "w", {"kind": "word2sen", "model": "m", "count": 2}, pools)
    assert report["empty"] == ["one"] and len(report["short"]) == 3
    from synthscale.prompts.strategies import read_prompts

    assert read_prompts(tmp_path / "p.jsonl")[1] == ["one"]


def test_caption_pool_captions_the_first_real_images_of_each_class(tiny_prompt_models, tmp_path, digits_16):
    from synthscale.prompts.models import build_pools, first_images_per_class
    from synthscale.data.shards import write_shard

    images, labels = digits_16
    keep = labels < 3
    images, labels = images[keep][:60], labels[keep][:60]
    recs = [{"key": f"{i:06d}", "label": int(c)} for i, c in enumerate(labels)]
    shards = [tmp_path / "real-0.tar", tmp_path / "real-1.tar"]
    write_shard(shards[0], images[:30], recs[:30])
    write_shard(shards[1], images[30:], recs[30:])
    firsts = first_images_per_class(shards, 3, 4)
    for c in range(3):
        expect = images[labels == c][:4]
        assert np.array_equal(np.stack(firsts[c])[..., :1], expect)
    s = spec("caption", tiny_prompt_models["blip"], images_per_class=4, batch_size=4)
    pools = build_pools(s, classes(), seed=0, real_shards=shards, progress=False)
    for pool, name in zip(pools, ["zero", "one", "two"]):
        assert len(pool["prompts"]) == 4
        assert all(p.startswith(f"a photo of {name}, ") and len(p) > len(f"a photo of {name}, ") for p in pool["prompts"])
    again = build_pools(s, classes(), seed=0, real_shards=shards, progress=False)
    assert [p["prompts"] for p in again] == [p["prompts"] for p in pools]


@pytest.mark.parametrize(
    "entry,strategies,message",
    [
        ({"w2s": {"kind": "word2sen", "model": "/missing/t5"}}, ["w2s"],
         "config key prompt_models.w2s.model: '/missing/t5' is no local transformers model folder"),
        ({"classname": {"kind": "word2sen", "model": "t5-small"}}, ["classname"],
         "config key prompt_models.classname: 'classname' is a rule-based strategy's name"),
        ({}, ["w2s"], "config key strategies: unknown prompt strategy 'w2s'"),
        ({"w2s": {"kind": "word2sen", "model": "t5-small", "template": "{nam}"}}, ["w2s"],
         "config key prompt_models.w2s.template: bad template field"),
        ({"w2s": {"kind": "nope", "model": "t5-small"}}, ["w2s"], "config key prompt_models.w2s.kind"),
    ],
)
def test_bad_prompt_model_config_names_the_key(entry, strategies, message):
    cfg = yaml.safe_load((REPO / "configs/test.yaml").read_text())
    cfg |= {"prompt_models": entry, "strategies": strategies}
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        check_config(cfg)


class CountingSampler:
    """A stand-in model: `n` new distinct texts per call, none naming any class."""

    def __init__(self):
        self.calls = 0

    def __call__(self, text, n, max_new_tokens, sampling):
        self.calls += 1
        return [f"text {self.calls}-{j}" for j in range(n)]


def test_word2sen_defaults_fill_the_pool(tiny_prompt_models):
    from synthscale.prompts.models import sample_pool

    w = spec("word2sen", tiny_prompt_models["t5"])  # count 200, batch_size 16: 13 rounds at the least
    row = classes().to_dict("records")[2]
    pool, sampled = sample_pool(CountingSampler(), row, w, 0)
    assert len(pool) == w["count"] == 200 and sampled == 13 * 16


def test_max_rounds_that_cannot_fill_the_pool_is_a_config_error(tiny_prompt_models):
    with pytest.raises(ConfigError, match=r"config key prompt_models\.m\.max_rounds: 2 rounds x 8 texts"):
        spec("word2sen", tiny_prompt_models["t5"], count=20, batch_size=8, max_rounds=2)


def test_llm_prompts_name_their_class(tiny_prompt_models, tmp_path):
    """The llm default format is the model's text; a text that drops the class name gets it in front."""
    from synthscale.prompts.models import sample_pool, write_model_prompts

    s = spec("llm", tiny_prompt_models["gpt2"], count=3, batch_size=4)
    rows = classes().to_dict("records")
    pools = []
    for row in rows:
        prompts, sampled = sample_pool(CountingSampler(), row, s, 0)
        assert prompts == [f"{row['name']}, text 1-{j}" for j in range(3)]
        pools.append({"row": row, "prompts": prompts, "generated": sampled, "kept": 3, "named": 3})
    write_model_prompts(tmp_path / "l.jsonl", "llm", s, pools)
    assert [json.loads(line)["named"] for line in (tmp_path / "l.jsonl").read_text().splitlines()] == [3, 3, 3]
    # a text that names its class (any case) is kept as written
    from synthscale.prompts.models import named

    assert named("A Zero on a desk", "zero") == "A Zero on a desk" and named("a desk", "zero") == "zero, a desk"


@pytest.mark.parametrize("kind, reads_real", [("caption", True), ("word2sen", False), ("llm", False)])
def test_a_prompt_model_job_hands_real_shards_to_a_captioner_only(tmp_path, monkeypatch, kind, reads_real):
    """make_model_prompts (rule prompts_model): a captioner's pools come from the real training split's
    shards (listed by the manifest), a language model's from none; the job's report lines name the
    prompt count, the classes left short and those with no usable text."""
    import synthscale.prompts.models as M

    (tmp_path / "splits.json").write_text(json.dumps({"splits": {"train": {"shards": ["train/a.tar", "train/b.tar"]}}}))
    seen = {}

    def fake_pools(spec, classes, seed, device, real):
        seen.update(seed=seed, device=device, real=list(real))
        return [{"row": row, "prompts": [f"{row['name']} p"] * (c != 2), "generated": 3, "kept": 2 - (c > 0) - (c > 1)}
                for c, row in enumerate(classes.to_dict("records"))]

    monkeypatch.setattr(M, "build_pools", fake_pools)
    s = {"kind": kind, "model": "m", "seed": 7, "count": 2}
    lines = M.make_model_prompts(tmp_path / "p.jsonl", "w", s, classes(), tmp_path / "splits.json", "cpu")
    assert seen["real"] == ([tmp_path / "train/a.tar", tmp_path / "train/b.tar"] if reads_real else [])
    assert seen["seed"] == 7
    assert lines == ["w: 3 prompts for 3 classes",
                     "w: 2 classes have fewer than 2 distinct prompts: one, two",
                     "w: no usable text for two: the class name stands in"]
