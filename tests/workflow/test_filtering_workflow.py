"""Filtering through Snakemake on the tiny study (configs/test.yaml): a filtered set trains and reaches
quality, CAS and the filter report; a CLIP filter's dry run schedules its jobs with the scorer's files
as inputs. The filter's functions are tested in tests/unit/test_filtering.py."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers.tiny_clip import tiny_open_clip
from helpers.workflow import new_workdir, smk
from synthscale.data.shards import load_arrays

pytestmark = pytest.mark.workflow


def test_a_filtered_set_trains_and_reaches_the_report(tmp_path):
    work = new_workdir(tmp_path / "study")
    overrides = {
        "guidance": [1.0],
        "filters": ["none", "all"],
        # threshold 0 passes every image: this checks the wiring (the selection: tests/unit/test_filtering.py)
        "filter_specs": {"all": {"kind": "judge", "threshold": 0.0, "overgenerate": 1.5}},
    }
    smk(work, "--cores", "2", "results-test/filter.csv", overrides=overrides)
    results = work / "results-test"
    folder = results / "synthetic/tiny/g1/classname/f-all"
    counts = json.loads((folder / "counts.json").read_text())
    assert counts["kept"] == 40 and counts["seen"] == 40 and counts["generated"] == 60
    _, labels, recs = load_arrays(sorted(folder.glob("shard-*.tar")))
    assert [r["index"] for r in recs] == list(range(40))
    assert (results / "synthetic/tiny/g1/classname/shard-000002.tar").exists(), "over-generated shard"
    table = pd.read_csv(results / "filter.csv")
    assert set(table["filter"]) == {"none", "all"}
    metrics = ["recognizability", "diversity", "fid", "cas"]
    assert table[metrics].notna().all().all()
    # a filter that passes everything keeps the same images in the same order: same quality and CAS
    assert table.set_index("filter").loc["all", metrics].tolist() == table.set_index("filter").loc["none", metrics].tolist()
    assert (results / "train/resnet18/synthetic/tiny/g1/classname/f-all/n40/s0/model.safetensors").exists()
    assert "Filter all" in (results / "filter_findings.html").read_text()
    assert (results / "plots/filter.png").read_bytes()[:4] == b"\x89PNG"


def test_a_clip_filter_schedules_its_jobs_with_the_scorer_as_input(tmp_path):
    folder = tiny_open_clip(tmp_path / "clip")
    work = new_workdir(tmp_path / "study")
    overrides = {
        "filters": ["none", "clip50"],
        "filter_specs": {"clip50": {"kind": "clip", "keep_fraction": 0.5, "overgenerate": 2.0,
                                    "clip": {"model": f"local-dir:{folder}"}, "guidance": [3.0]}},
    }
    proc = smk(work, "results-test/filter.csv", "-n", "--quiet", "rules", overrides=overrides)
    out = proc.stdout + proc.stderr
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    # 2x over-generation of the largest N (40 = 2 shards of 20): 4 generated shards at g3
    assert counts["filter_set"] == 1 and counts["filter_quality"] == 1 and counts["filter_report"] == 1
    assert counts["generate_block"] == 4 and counts["evaluate"] == 2
    proc = smk(work, "results-test/synthetic/tiny/g3/classname/f-clip50/counts.json", "-n",
               overrides=overrides)
    assert str(folder / "open_clip_config.json") in proc.stdout + proc.stderr
