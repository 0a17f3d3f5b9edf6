"""The CLIP arm: caption shards, open_clip_train on CPU, zero-shot evaluation, fits and config checks."""
import copy
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from synthscale import clip as C
from synthscale import clip_eval as E
from synthscale import clip_report as CR
from synthscale.config import ConfigError, check_config
from synthscale.data import digits_classes, prepare_digits, split_shards
from synthscale.plan import Plan, parse_clip_source
from synthscale.shards import write_shard

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 4},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def recipe(**kw):
    r = {
        "model": "test-tiny-clip",
        "model_config": TINY,
        "epochs": 2,
        "min_steps": 0,
        "batch_size": 32,
        "lr": 1e-3,
        "wd": 0.1,
        "warmup": 5,
        "workers": 0,
        "precision": "fp32",
        "shard_size": 1000,
        "log_every_n_steps": 100,
        "save_frequency": 0,
        "extra_args": [],
        "launcher": [],
        "caption_strategies": ["classname", "templates"],
    }
    return {**r, **kw}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    prepare_digits(out, 16, 0.33, [{"name": "test"}], 1000, 0)
    digits_classes().to_csv(out / "classes.csv", index=False)
    return out


def synthetic_shards(folder: Path, n: int = 40, shard_size: int = 16) -> list[Path]:
    """Synthetic-looking shards: image i of class i mod 10 with a prompt."""
    rng = np.random.default_rng(0)
    paths = []
    for k, start in enumerate(range(0, n, shard_size)):
        idx = range(start, min(n, start + shard_size))
        images = [rng.integers(0, 255, (16, 16, 1), dtype=np.uint8) for _ in idx]
        recs = [{"key": f"{i:08d}", "label": i % 10, "prompt": f"prompt {i}", "guidance": 2.0} for i in idx]
        paths.append(folder / f"shard-{k:06d}.tar")
        write_shard(paths[-1], images, recs)
    return paths


def read_pairs(paths):
    out = []
    for p in paths:
        with tarfile.open(p) as tar:
            names = tar.getnames()
            for n in names:
                if n.endswith(".txt"):
                    key = n[:-4]
                    txt = tar.extractfile(n).read().decode()
                    meta = json.loads(tar.extractfile(key + ".json").read())
                    out.append((key, txt, meta))
    return out


def test_real_captions_are_drawn_per_image_from_the_class_pool():
    pools = C.caption_pools(digits_classes(), ["classname", "templates"])
    assert len(pools) == 10 and len(pools[3]) == 81 and pools[3][0] == "three"
    caps = [C.real_caption(i, 3, pools, seed=0) for i in range(50)]
    assert caps == [C.real_caption(i, 3, pools, seed=0) for i in range(50)]  # from (seed, i) alone
    assert all(c in pools[3] for c in caps) and len(set(caps)) > 10
    assert caps != [C.real_caption(i, 3, pools, seed=1) for i in range(50)]


def test_caption_shards_mix_real_then_synthetic_with_exact_n(tmp_path, digits):
    syn = synthetic_shards(tmp_path / "syn", n=40, shard_size=16)
    real = split_shards(digits / "splits.json", "train")
    pools = C.caption_pools(digits_classes(), ["classname"])
    parts = C.clip_parts("mixed", 20, real, syn, mix_real_n=25)
    shards, count = C.write_caption_shards(tmp_path / "out", parts, pools, seed=0, shard_size=16)
    assert count == 45 and len(shards) == 3
    pairs = read_pairs(shards)
    assert [k for k, _, _ in pairs] == [f"{i:09d}" for i in range(45)]
    real_pairs, syn_pairs = pairs[:25], pairs[25:]
    assert all(m["origin"] == "real" and t == digits_classes()["name"][m["label"]] for _, t, m in real_pairs)
    assert [t for _, t, _ in syn_pairs] == [f"prompt {i}" for i in range(20)]  # the first N, in order
    with pytest.raises(ValueError, match="hold 40"):
        C.write_caption_shards(tmp_path / "o2", [("synthetic", syn, 41)], pools, 0)


def test_real_images_keep_their_own_captions(tmp_path):
    images = [np.zeros((16, 16, 1), np.uint8)] * 3
    recs = [{"key": f"{i:08d}", "label": i, "caption": f"a scan of digit {i}"} for i in range(3)]
    write_shard(tmp_path / "shard-000000.tar", images, recs)
    got = list(C.iter_captioned([tmp_path / "shard-000000.tar"], 3, "real", pools=None))
    assert [t for _, _, _, t, _ in got] == [f"a scan of digit {i}" for i in range(3)]


def make_model(name="test-tiny-clip"):
    import open_clip

    C.register_model(name, TINY, Path("/tmp") / "synthscale-test-clip-configs")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def test_zero_shot_logits_reproduce_open_clip_classifier():
    import open_clip
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    model, _, tok = make_model()
    names = digits_classes()["name"].tolist()
    clf = E.zero_shot_classifier(model, tok, names)
    ref = open_clip.build_zero_shot_classifier(model, tok, names, OPENAI_IMAGENET_TEMPLATES, use_tqdm=False)
    assert clf.shape == (32, 10) and torch.allclose(clf, ref)
    # by hand: the mean of each class's 80 normalised template embeddings, normalised
    with torch.no_grad():
        cols = []
        for n in names:
            t = F.normalize(model.encode_text(tok([tpl(n) for tpl in OPENAI_IMAGENET_TEMPLATES])), dim=-1)
            cols.append(F.normalize(t.mean(0), dim=-1))
        manual = torch.stack(cols, 1)
        assert torch.allclose(clf, manual, atol=1e-5)
        x = torch.randn(6, 3, 16, 16)
        logits = E.zero_shot_logits(model, x, clf)
        want = model.logit_scale.exp() * F.normalize(model.encode_image(x), dim=-1) @ manual
    assert torch.allclose(logits, want, atol=1e-4)
    assert abs(float(model.logit_scale.exp().detach()) - 1 / 0.07) < 1e-3  # CLIP's initial temperature


def test_evaluate_zero_shot_accumulates_batches(digits):
    model, preprocess, tok = make_model()
    clf = E.zero_shot_classifier(model, tok, digits_classes()["name"].tolist())
    shards = split_shards(digits / "splits.json", "test")
    a = E.evaluate_zero_shot(model, clf, E.eval_loader(shards, preprocess, 64))
    b = E.evaluate_zero_shot(model, clf, E.eval_loader(shards, preprocess, 1000))
    assert a["n_eval"] == b["n_eval"] == 594
    assert a["top1"] == b["top1"] and abs(a["loss"] - b["loss"]) < 1e-6


def test_tiny_clip_trains_with_open_clip_train_and_beats_chance(tmp_path, digits):
    real = split_shards(digits / "splits.json", "train")
    from synthscale.config import load_schema

    default = load_schema()["properties"]["clip"]["properties"]["model_config"]["default"]
    r = recipe(model="test-train-clip", epochs=16, batch_size=64, lr=2e-3, model_config=default)
    info = C.train_clip(C.clip_parts("real", 300, real, [], 0), digits_classes(), r, 0, tmp_path / "m" / "model.safetensors")
    assert info["n_pairs"] == 300 and not (tmp_path / "m" / "work").exists()
    cfg = json.loads((tmp_path / "m" / "model_config.json").read_text())
    assert cfg["model"] == "test-train-clip" and cfg["config"]["embed_dim"] == 64
    df = E.evaluate_clip_models([tmp_path / "m" / "model.safetensors"], ["300"], digits / "splits.json",
                                digits / "classes.csv", ["test"], tmp_path / "metrics.csv")
    row = df.iloc[0]
    assert row["top1"] > 0.15, row  # chance is 0.1; 0.15 is 4 standard errors above it on 594 images
    assert row["loss"] < np.log(10)


def test_open_clip_train_reruns_are_bit_identical(tmp_path, digits):
    from safetensors.torch import load_file

    real = split_shards(digits / "splits.json", "train")
    parts = C.clip_parts("real", 64, real, [], 0)
    for run in ("a", "b"):
        C.train_clip(parts, digits_classes(), recipe(epochs=3), 0, tmp_path / run / "model.safetensors")
    a, b = (load_file(tmp_path / r / "model.safetensors") for r in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    C.train_clip(parts, digits_classes(), recipe(epochs=3), 1, tmp_path / "c" / "model.safetensors")
    c = load_file(tmp_path / "c" / "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed matters


def test_epochs_stretch_to_min_steps():
    assert C.clip_epochs(300, {"epochs": 2, "batch_size": 64, "min_steps": 0}) == 2
    assert C.clip_epochs(300, {"epochs": 2, "batch_size": 64, "min_steps": 50}) == 10


def test_scaling_fit_recovers_slope_and_ratio():
    rows = []
    for src, k in [("real", 0.4), ("synthetic/g/g2/classname", 0.2), ("mixed/g/g2/classname", 0.3)]:
        for n in (100, 200, 400, 800):
            rows.append({**CR.clip_source_columns(src), "eval_set": "test", "n": n, "n_label": str(n),
                         "loss": 3 * n ** -k, "top1": 0.5})
    s = pd.DataFrame(rows)
    fits = CR.clip_scaling(s, draws=200, seed=0).set_index("source")
    assert fits.loc["real", "k"] == pytest.approx(0.4)
    assert fits.loc["synthetic/g/g2/classname", "k_ratio_to_real"] == pytest.approx(0.5)
    assert fits.loc["real", "k_lo"] == pytest.approx(0.4) and fits.loc["real", "B"] == pytest.approx(3)
    text = " ".join(CR.clip_findings(s.assign(ood=False), fits.reset_index(), 10, "test"))
    assert "k = 0.200" in text and "ratio of 0.50" in text and "0.355" in text
    two = s[s["n"].isin([100, 200])]
    text = " ".join(CR.clip_findings(two.assign(ood=False), CR.clip_scaling(two, draws=50, seed=0), 10, "test"))
    assert "only 2 N values" in text and "ratio of" not in text, "two points give no slope worth a ratio"


def test_clip_summary_and_plot(tmp_path):
    paths = []
    for i, src in enumerate(["real", "synthetic/g/g2/c", "mixed/g/g2/c"]):
        p = tmp_path / f"{i}.csv"
        pd.DataFrame({"n_label": ["10", "20"] * 2, "eval_set": ["test"] * 2 + ["rot"] * 2,
                      "loss": [2.0, 1.5, 2.1, 1.9], "top1": [0.2, 0.3, 0.1, 0.2]}).to_csv(p, index=False)
        paths.append(p)
    s = CR.build_clip_summary(["real", "synthetic/g/g2/c", "mixed/g/g2/c"], paths, {"rot": True}, 20)
    assert s[s["kind"] == "mixed"]["n_pairs"].tolist() == [30, 40, 30, 40]
    assert s[s["eval_set"] == "rot"]["ood"].all()
    CR.plot_clip_scaling(s, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    t = CR.zero_shot_table(s, 10)
    assert {"top1_test", "loss_rot", "chance_top1"} <= set(t.columns) and len(t) == 6


@pytest.fixture
def raw():
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg.setdefault("clip", {})["enabled"] = True
    return cfg


def test_plan_lists_clip_sources_and_paths(raw):
    raw["clip"].update({"sources": [{"generator": "tinydigits", "guidance": 2.0, "strategy": "classname"}],
                        "n_images": [100, 200], "mix_real_n": None})
    cfg = check_config(raw)
    plan = Plan(cfg)
    assert plan.clip_sources() == ["real", "synthetic/tinydigits/g2/classname", "mixed/tinydigits/g2/classname"]
    assert len(plan.clip_runs()) == 6 and plan.clip_mix_real_n() == 200
    assert plan.clip_model("mixed/tinydigits/g2/classname", 100).endswith("clip/mixed/tinydigits/g2/classname/n100/model.safetensors")
    assert parse_clip_source("mixed/tinydigits/g2/classname")[0] == "mixed"
    assert plan.plot("clip_scaling") in plan.clip_targets()
    raw["clip"]["enabled"] = False
    assert Plan(check_config(raw)).clip_targets() == []


@pytest.mark.parametrize(
    "edit, key",
    [
        ({"model": "no-such-clip", "model_config": None}, "clip.model"),
        ({"model_config": "missing.json"}, "clip.model_config"),
        ({"sources": [{"generator": "tinydigits", "guidance": 9.0, "strategy": "classname"}]}, r"clip.sources\[0\]"),
        ({"n_images": [100, 100000]}, "clip.n_images"),
        ({"batch_size": 500, "n_images": [100]}, "clip.batch_size"),
        ({"caption_strategies": ["nope"]}, "clip.caption_strategies"),
        ({"precision": "fp8"}, "clip.precision"),
    ],
)
def test_bad_clip_config_names_the_key(raw, edit, key):
    raw["clip"].update(copy.deepcopy(edit))
    with pytest.raises(ConfigError, match=key) as err:
        check_config(raw)
    assert "\n" not in str(err.value)


def test_two_n_values_give_no_interval():
    s = pd.DataFrame([{**CR.clip_source_columns("real"), "eval_set": "test", "n": n, "n_label": str(n),
                       "loss": 2.0 * n ** -0.3, "top1": 0.3, "ood": False} for n in (10, 20)])
    fits = CR.clip_scaling(s, draws=100, seed=0)
    assert fits["k"].iloc[0] == pytest.approx(0.3) and np.isnan(fits["k_lo"].iloc[0])
    assert fits["k_interval"].iloc[0].startswith("undetermined")


def test_a_resumed_run_reaches_the_same_weights(tmp_path, digits):
    """A job killed after epoch 1 (its work folder holds epoch_1.pt) resumes to bit-identical weights."""
    from safetensors.torch import load_file

    real = split_shards(digits / "splits.json", "train")
    parts = C.clip_parts("real", 64, real, [], 0)
    r = recipe(epochs=2, save_frequency=1)
    C.train_clip(parts, digits_classes(), r, 0, tmp_path / "full" / "model.safetensors")
    # the "killed" job's work folder: its caption shards and open_clip_train stopped after epoch 1
    work = tmp_path / "resumed" / "work"
    shards, count = C.write_caption_shards(work / "shards", parts, C.caption_pools(digits_classes(), r["caption_strategies"]), 0)
    (work / "shards" / "done.json").write_text(json.dumps({"shards": [str(p) for p in shards], "count": count}))
    C.register_model(r["model"], r["model_config"], work / C.CONFIG_DIR)
    C.run_open_clip_train(C.open_clip_argv(shards, count, {**r, "epochs": 1}, 0, work, "cpu"), 0, work / C.CONFIG_DIR)
    assert (work / C.OPEN_CLIP_RUN / "checkpoints" / "epoch_1.pt").exists()
    C.train_clip(parts, digits_classes(), r, 0, tmp_path / "resumed" / "model.safetensors", work_dir=work)
    log = (tmp_path / "resumed" / "train.log").read_text()
    before, after = log.split("resuming checkpoint", 1)
    assert "Start epoch 0" in before and "Start epoch 0" not in after and "Start epoch 1" in after
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
