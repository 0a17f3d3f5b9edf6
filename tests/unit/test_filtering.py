"""Filtering as a grid axis: the pass rules, nested N and counts of the streaming filter, the judge
and CLIP scorers (a tiny random open_clip model built from a config, tests/helpers/tiny_clip.py), source
names, config checks and the filter report. A filtered set's run through Snakemake is in
tests/workflow/test_filtering_workflow.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from helpers import REPO
from helpers.tiny_clip import tiny_open_clip
from synthscale.study.config import ConfigError, check_config
from synthscale.quality.filtering import (
    ClipScorer,
    FilterShortfall,
    JudgeScorer,
    filter_set,
    iter_raw,
    passes,
    run_filter,
)
from synthscale.study.plan import Plan
from synthscale.study.sources import SOURCE_REGEX, parse_source, synthetic_source
from synthscale.data.shards import load_arrays, write_shard

torch.set_num_threads(1)
JUDGE = {"kind": "judge", "threshold": 0.5, "overgenerate": 2.0, "batch_size": 7}


def make_set(folder: Path, n_shards: int, size: int, n_classes: int = 3) -> list[Path]:
    """A synthetic-looking set: image i has class i mod C, a prompt, and pixels that encode i."""
    paths = []
    for k in range(n_shards):
        idx = range(k * size, (k + 1) * size)
        images = [np.full((4, 4, 3), i % 256, dtype=np.uint8) for i in idx]
        recs = [{"key": f"{i:08d}", "index": i, "label": i % n_classes, "prompt": f"p{i % n_classes}"} for i in idx]
        paths.append(folder / f"shard-{k:06d}.tar")
        write_shard(paths[-1], images, recs)
    return paths


def index_scorer(images, labels, prompts):
    """Score = 1 for images whose index (the pixel value) is not a multiple of 3, else 0."""
    idx = images[:, 0, 0, 0].astype(int)
    return (idx % 3 != 0).astype(float)


def test_pass_rules():
    s = np.array([0.2, 0.9, 0.5, 0.5, 0.1])
    assert passes(s, {"kind": "judge", "threshold": 0.5}).tolist() == [False, True, True, True, False]
    # clip: the top ceil(0.4 x 5) = 2 of the shard; a tie goes to the lower index
    assert passes(s, {"kind": "clip", "keep_fraction": 0.4}).tolist() == [False, True, True, False, False]


def rate_scorer(images, labels, prompts):
    """Classes pass at different rates: class 0 always, class 1 every other time it comes, class 2
    every third time (image i is the (i // 3)-th of its class)."""
    idx = images[:, 0, 0, 0].astype(int)
    every = np.where(idx % 3 == 0, 1, np.where(idx % 3 == 1, 2, 3))
    return ((idx // 3) % every == 0).astype(float)


def test_filter_keeps_a_class_balanced_set(tmp_path):
    src = make_set(tmp_path / "set", 6, 6)
    outs = [tmp_path / "f" / f"shard-{k:06d}.tar" for k in range(2)]
    counts = run_filter(src, JUDGE, "conf", outs, tmp_path / "f/counts.json", 6, 3, rate_scorer, progress=False)
    _, labels, recs = load_arrays(outs)
    # the reference: each class's first 12 / 3 = 4 passing images, in index order, interleaved by class
    ok = rate_scorer(np.arange(36, dtype=np.uint8)[:, None, None, None].repeat(3, -1), None, None) == 1
    first = {c: [i for i in range(36) if i % 3 == c and ok[i]][:4] for c in range(3)}
    assert list(labels) == [0, 1, 2] * 4
    assert [r["index"] for r in recs] == [first[j % 3][j // 3] for j in range(12)]
    assert [c["kept"] for c in counts["per_class"]] == [4, 4, 4] and counts["classes_short"] == []
    # the set is complete once class 2's 4th passing image (index 29) is seen
    assert counts["seen"] == 30 and counts["passed"] == 10 + 5 + 4


def test_filter_keeps_the_first_passing_images_in_order_and_counts_them(tmp_path):
    src = make_set(tmp_path / "set", 4, 6)
    outs = [tmp_path / "f" / f"shard-{k:06d}.tar" for k in range(2)]
    counts = run_filter(src, JUDGE, "conf", outs, tmp_path / "f/counts.json", 6, 3, index_scorer, progress=False)
    _, labels, recs = load_arrays(outs)
    want = [i for i in range(24) if i % 3 != 0][:12]
    assert [r["index"] for r in recs] == want
    assert all(r["filter"] == "conf" and r["filter_score"] == 1.0 for r in recs)
    assert [r["filtered_index"] for r in recs] == list(range(12))
    assert list(labels) == [i % 3 for i in want]
    # class 0 (multiples of 3) never passes: every generated image is looked at, then classes 1 and 2
    # share the positions (as many as possible per class), and the counts say class 0 is short
    assert counts["seen"] == 24 and counts["kept"] == 12 and counts["passed"] == 16
    assert counts["cost"] == pytest.approx(2.0) and counts["generated"] == 24
    pc = {c["class_index"]: c for c in counts["per_class"]}
    assert [pc[c]["seen"] for c in range(3)] == [8, 8, 8] and [pc[c]["kept"] for c in range(3)] == [0, 6, 6]
    assert counts["classes_short"] == [0]
    assert json.loads((tmp_path / "f/counts.json").read_text()) == counts
    # image bytes are copied, not re-encoded
    raw_src = {r["index"]: b for b, _, r in iter_raw(src)}
    assert all(raw_src[r["index"]] == b for b, _, r in iter_raw(outs))


def test_nested_n_holds_when_the_largest_n_grows(tmp_path):
    src = make_set(tmp_path / "set", 12, 6)
    small = [tmp_path / "a" / f"shard-{k:06d}.tar" for k in range(1)]
    large = [tmp_path / "b" / f"shard-{k:06d}.tar" for k in range(3)]
    filter_set(src, rate_scorer, JUDGE, "conf", small, 6, 3, progress=False)
    filter_set(src, rate_scorer, JUDGE, "conf", large, 6, 3, progress=False)
    assert small[0].read_bytes() == large[0].read_bytes()


def test_too_few_passing_images_name_the_key_to_raise(tmp_path):
    src = make_set(tmp_path / "set", 2, 6)
    outs = [tmp_path / "f" / f"shard-{k:06d}.tar" for k in range(2)]
    with pytest.raises(FilterShortfall, match=r"only 8 of 12 .* needs 12; raise config key filter_specs\.conf\.overgenerate"):
        filter_set(src, index_scorer, JUDGE, "conf", outs, 6, 3, progress=False)


def test_judge_scorer_gives_p_of_the_class(digits_16):
    from synthscale.quality.judge import trained_judge
    from synthscale.classifier.train import create_classifier, to_input

    images, labels = digits_16
    images, labels = np.repeat(images[:8], 3, axis=-1), labels[:8]
    torch.manual_seed(0)
    model = create_classifier("resnet18", 10, {"channels": (8, 16, 32, 64)}).eval()
    scores = JudgeScorer(trained_judge(model), 16)(images, labels, [""] * 8)
    with torch.no_grad():
        p = torch.softmax(model(to_input(images)), 1).numpy()
    assert np.allclose(scores, p[np.arange(8), labels], atol=1e-5)


def test_clip_scorer_is_the_image_prompt_cosine(tmp_path):
    import torch.nn.functional as F

    folder = tiny_open_clip(tmp_path / "clip")
    scorer = ClipScorer(f"local-dir:{folder}")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    prompts = ["a photo of a zero", "a photo of a one", "a photo of a zero", "seven"]
    s = scorer(images, np.zeros(4, int), prompts)
    assert s.shape == (4,) and np.all(np.abs(s) <= 1 + 1e-6)
    from PIL import Image

    with torch.no_grad():
        x = torch.stack([scorer.preprocess(Image.fromarray(im)) for im in images])
        img = F.normalize(scorer.model.encode_image(x), dim=-1)
        txt = F.normalize(scorer.model.encode_text(scorer.tokenizer(prompts)), dim=-1)
    assert np.allclose(s, (img * txt).sum(-1).numpy(), atol=1e-5)
    # the filter with a CLIP scorer keeps the top half of each generated shard
    src = make_set(tmp_path / "set", 2, 6)
    spec = {"kind": "clip", "keep_fraction": 0.5, "overgenerate": 2.0, "batch_size": 4}
    res = filter_set(src, scorer, spec, "clip", [tmp_path / "f/shard-000000.tar"], 6, 3, progress=False)
    assert res.counts["seen"] == 12 and res.counts["kept"] == 6


def test_filtered_source_names_round_trip():
    import re

    name = synthetic_source("sd", 2.0, "classname", "conf")
    assert name == "synthetic/sd/g2/classname/f-conf"
    src = parse_source(name)
    assert (src.generator, src.guidance, src.strategy, src.filter) == ("sd", 2.0, "classname", "conf")
    assert src.name == name and src.unfiltered.name == "synthetic/sd/g2/classname"
    assert parse_source("synthetic/sd/g2/classname").filter is None
    assert re.fullmatch(SOURCE_REGEX, name) and re.fullmatch(SOURCE_REGEX, "synthetic/sd/g2/classname")
    with pytest.raises(ValueError):
        parse_source("synthetic/sd/g2/classname/conf")


def test_plan_of_a_filter_axis():
    cfg = yaml.safe_load((REPO / "configs/test.yaml").read_text())
    cfg |= {"filters": ["none", "conf"],
            "filter_specs": {"conf": {"kind": "judge", "overgenerate": 1.5, "guidance": [3.0]}}}
    plan = Plan(check_config(cfg))
    (src,) = plan.filtered_grid()
    assert src.name == "synthetic/tiny/g3/classname/f-conf"
    assert plan.filter_target() == 40 and plan.filter_input_n("conf") == 60
    assert plan.set_shards(src, 30) == [
        f"results-test/synthetic/tiny/g3/classname/f-conf/shard-{k:06d}.tar" for k in range(2)
    ]
    assert plan.filter_runs() == [(src.name, "20"), (src.name, "40")]
    assert plan.n_labels(src.name) == ["20", "40"]
    assert all("f-" not in s for s in plan.sources()), "the study summary keeps unfiltered sources"


@pytest.mark.parametrize(
    "filters,specs,message",
    [
        (["conf"], {"conf": {"kind": "judge"}}, "config key filters: must include 'none'"),
        (["none", "cnf"], {"conf": {"kind": "judge"}}, "config key filters: unknown filter 'cnf'"),
        (["none", "conf"], {"conf": {"kind": "judge", "guidance": [7.5]}},
         "config key filter_specs.conf.guidance: 7.5 is not in the study's guidance"),
        (["none", "c"], {"c": {"kind": "clip", "clip": {"model": "local-dir:/missing/clip"}}},
         "config key filter_specs.c.clip.model: '/missing/clip' holds no open_clip_config.json"),
        # under results, too: no rule writes open_clip's local-dir layout (snakemake -n stopped with a
        # MissingInputException on its open_clip_config.json)
        (["none", "c"], {"c": {"kind": "clip", "clip": {"model": "local-dir:results-test/clip/real/n40/s0"}}},
         "config key filter_specs.c.clip.model: 'results-test/clip/real/n40/s0' holds no open_clip_config.json, "
         "and no rule writes one under results ('results-test'); point it at a folder that holds"),
        (["none", "c"], {"c": {"kind": "clip", "clip": {"model": "ViT-B-32"}}},
         "config key filter_specs.c.clip.pretrained: a local weights file is required"),
        (["none", "c"], {"c": {"kind": "clip", "clip": {"model": "ViT-B-32", "pretrained": "/no/w.safetensors"}}},
         "config key filter_specs.c.clip.pretrained: '/no/w.safetensors' does not exist"),
        (["none", "c"], {"c": {"kind": "judge", "overgenerate": 0.5}}, "config key filter_specs.c.overgenerate"),
    ],
)
def test_bad_filter_config_names_the_key(filters, specs, message):
    cfg = yaml.safe_load((REPO / "configs/test.yaml").read_text())
    cfg |= {"filters": filters, "filter_specs": specs}
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert str(err.value).startswith(message), str(err.value)


def test_filter_report_pairs_each_filtered_set_with_its_unfiltered_set(tmp_path):
    from synthscale.analysis.filter_report import deltas, filter_table, write_report

    def q(path, rec, div, fid):
        path.write_text(json.dumps({"recognizability": rec, "diversity": div, "fid": fid}))
        return path

    def ev(path, top1):
        pd.DataFrame({"n_label": ["30", "300", "300"], "eval_set": ["test", "test", "rot"],
                      "top1": [0.1, top1, 0.0]}).to_csv(path, index=False)
        return path

    counts = tmp_path / "c.json"
    counts.write_text(json.dumps({"kind": "judge", "seen": 450, "kept": 300, "cost": 1.5, "pass_rate": 2 / 3}))
    src = "synthetic/tiny/g2/classname/f-conf"
    df = filter_table([src], [counts], [q(tmp_path / "fq.json", 0.8, 0.2, 30.0)],
                      [q(tmp_path / "bq.json", 0.6, 0.3, 40.0)], [ev(tmp_path / "fe.csv", 0.7)],
                      [ev(tmp_path / "be.csv", 0.65)], "test", "300")
    assert df["filter"].tolist() == ["none", "conf"]
    assert df["cas"].tolist() == [0.65, 0.7] and df["kept"].iloc[1] == 300
    d = deltas(df).iloc[0]
    assert d["d_recognizability"] == pytest.approx(0.2) and d["d_fid"] == pytest.approx(-10.0)
    assert d["d_cas"] == pytest.approx(0.05) and d["d_diversity"] == pytest.approx(-0.1)
    out = {"table": tmp_path / "t.csv", "plot": tmp_path / "p.png", "findings": tmp_path / "f.html"}
    lines = write_report(df, out, "300")
    assert "kept 300 of the first 450" in lines[0] and "1.50 generated per kept image" in lines[0]
    # the judge that filtered measured the recognizability gain: the table and the findings say so
    assert df["recognizability_judge"].tolist() == ["independent", "selecting"]
    assert "judge that also measures recognizability" in lines[1] and "CAS" in lines[1] and "+0.050" in lines[1]
    counts.write_text(json.dumps({"kind": "clip", "seen": 450, "kept": 300, "cost": 1.5, "pass_rate": 2 / 3}))
    clip = filter_table([src], [counts], [tmp_path / "fq.json"], [tmp_path / "bq.json"], [tmp_path / "fe.csv"],
                        [tmp_path / "be.csv"], "test", "300")
    assert clip["recognizability_judge"].tolist() == ["independent", "independent"]
    assert not any("by construction" in line for line in write_report(clip, out, "300"))
    assert out["plot"].read_bytes()[:4] == b"\x89PNG" and len(pd.read_csv(out["table"])) == 2



def test_filter_one_set_opens_the_specs_scorer_and_reads_the_class_count(tmp_path, monkeypatch):
    """The rule filter_set's entry: open_scorer's scorer and the manifest's class count into run_filter,
    which writes what the two calls wrote."""
    import synthscale.quality.filtering as FL

    src = make_set(tmp_path / "set", 4, 6)
    old = [tmp_path / "old" / f"shard-{k:06d}.tar" for k in range(2)]
    want = run_filter(src, JUDGE, "conf", old, tmp_path / "old/counts.json", 6, 3, index_scorer)
    opened = []
    monkeypatch.setattr(FL, "open_scorer", lambda *a: opened.append(a) or index_scorer)
    (tmp_path / "manifest.json").write_text('{"classes": 3}')
    new = [tmp_path / "new" / f"shard-{k:06d}.tar" for k in range(2)]
    got = FL.filter_one_set(src, JUDGE, "conf", new, tmp_path / "new/counts.json", 6, tmp_path / "manifest.json",
                            ["judge.pt"], {"arch": "a"}, 16, "cpu")
    assert opened == [(JUDGE, ["judge.pt"], {"arch": "a"}, 16, "cpu")] and got == want
    assert [p.read_bytes() for p in new] == [p.read_bytes() for p in old]
    assert (tmp_path / "new/counts.json").read_bytes() == (tmp_path / "old/counts.json").read_bytes()
