"""Model-made prompt strategies through Snakemake on the tiny study (configs/test.yaml): the word2sen,
caption and llm jobs (tiny random models, tests/helpers/tiny_prompt_models.py) feed generation, and a
missing model stops the run before any job."""
from __future__ import annotations

import json

import pytest

from helpers.workflow import new_workdir, smk
from synthscale.data.shards import load_arrays

pytestmark = pytest.mark.workflow


def test_model_strategies_run_through_their_jobs_into_generation(tiny_prompt_models, tmp_path):
    work = new_workdir(tmp_path / "study")
    overrides = {
        "prompt_models": {
            "w2s": {"kind": "word2sen", "model": str(tiny_prompt_models["t5"]), "count": 5, "batch_size": 8,
                    "max_new_tokens": 6, "max_rounds": 2},
            "incap": {"kind": "caption", "model": str(tiny_prompt_models["blip"]), "images_per_class": 3},
            "llm": {"kind": "llm", "model": str(tiny_prompt_models["gpt2"]), "count": 3, "batch_size": 4,
                    "max_new_tokens": 6, "max_rounds": 2},
        },
        "strategies": ["classname", "w2s", "incap", "llm"],
    }
    results = work / "results-test"
    targets = [f"results-test/synthetic/tiny/g{g}/{s}/shard-000000.tar"
               for g in (1, 3) for s in ("w2s", "incap", "llm")]
    smk(work, "--cores", "2", *targets, overrides=overrides)
    for s in ("w2s", "incap", "llm"):
        pools = [json.loads(line) for line in (results / f"prompts/digits/{s}.jsonl").read_text().splitlines()]
        assert len(pools) == 10 and all(p["prompts"] for p in pools)
        if s == "incap":
            assert all(len(p["prompts"]) == 3 and p["prompts"][0].startswith(f"a photo of {p['name']}, ") for p in pools)
        _, labels, recs = load_arrays([results / f"synthetic/tiny/g1/{s}/shard-000000.tar"])
        assert list(labels) == [i % 10 for i in range(20)]
        assert all(r["prompt"] in pools[r["label"]]["prompts"] for r in recs)
        # guidance values share prompts (paired comparisons)
        _, _, recs3 = load_arrays([results / f"synthetic/tiny/g3/{s}/shard-000000.tar"])
        assert [r["prompt"] for r in recs3] == [r["prompt"] for r in recs]
    assert (results / "benchmarks/prompts_model/w2s.tsv").exists()


def test_a_missing_model_stops_before_any_job(tmp_path):
    work = new_workdir(tmp_path / "bad")
    proc = smk(work, "--cores", "1", check=False, overrides={
        "prompt_models": {"w2s": {"kind": "word2sen", "model": str(tmp_path / "nothing")}},
        "strategies": ["w2s"],
    })
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "synthscale:" in ln]
    assert len(lines) == 1 and "config key prompt_models.w2s.model" in lines[0], proc.stderr[-2000:]
    assert not (work / "results-test").exists()
