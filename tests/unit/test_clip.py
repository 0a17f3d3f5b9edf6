"""The CLIP arm: caption shards, open_clip_train on CPU, zero-shot evaluation, fits and config checks."""
import copy
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from helpers import REPO
from helpers.data import clip_run_paths, prepared_paths
from synthscale.clip import pairs as P
from synthscale.clip import schedule as S
from synthscale.clip import train as C
from synthscale.clip import evaluate as E
from synthscale.analysis import clip_report as CR
from synthscale.study.config import ConfigError, check_config
from synthscale.data.real import digits_classes, prepare_digits, read_classes, split_shards
from synthscale.study.plan import Plan
from synthscale.study.sources import parse_source
from synthscale.data.shards import write_shard
from synthscale.io import write_csv

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
    prepare_digits(out, 16, 0.33, [{"name": "test"}], 1000, 0, **prepared_paths(out))
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


def test_captions_are_drawn_per_image_from_the_class_pool():
    pools = P.caption_pools(digits_classes(), ["classname", "templates"])
    assert len(pools) == 10 and len(pools[3]) == 81 and pools[3][0] == "three"
    caps = [P.pair_caption(i, 3, pools, seed=0) for i in range(50)]
    assert caps == [P.pair_caption(i, 3, pools, seed=0) for i in range(50)]  # from (seed, i) alone
    assert all(c in pools[3] for c in caps) and len(set(caps)) > 10
    assert caps != [P.pair_caption(i, 3, pools, seed=1) for i in range(50)]


def zero_shot_prompts() -> set[str]:
    """The exact prompts of the zero-shot classifier: every class name in every one of CLIP's 80 templates."""
    return {t(n) for n in digits_classes()["name"] for t in E.templates("openai_imagenet")}


def real_like_shards(folder: Path, n: int = 40, shard_size: int = 16) -> list[Path]:
    """Real-looking shards with the class sequence of `synthetic_shards` (image i of class i mod 10):
    half the records carry a dataset caption, half none."""
    images = [np.full((16, 16, 1), i, np.uint8) for i in range(n)]
    recs = [{"key": f"{i:08d}", "label": i % 10, **({"caption": f"a scan {i}"} if i % 2 else {})} for i in range(n)]
    paths = []
    for k, start in enumerate(range(0, n, shard_size)):
        paths.append(folder / f"shard-{k:06d}.tar")
        write_shard(paths[-1], images[start:start + shard_size], recs[start:start + shard_size])
    return paths


@pytest.mark.parametrize("strategies, in_captions", [(["classname", "templates"], True), (["classname"], False)])
def test_real_and_synthetic_pairs_share_one_caption_distribution(tmp_path, strategies, in_captions):
    """Like for like: given the same class sequence, real and synthetic pairs carry the same captions
    (so the same multiset of caption templates), and the zero-shot prompts are in both or in neither."""
    syn, real = synthetic_shards(tmp_path / "syn", 40), real_like_shards(tmp_path / "real", 40)
    pools = P.caption_pools(digits_classes(), strategies)
    caps = {}
    for kind, paths in (("real", real), ("synthetic", syn)):
        shards, count = P.write_caption_shards(tmp_path / kind, [(kind, paths, 40)], pools, seed=3)
        pairs = read_pairs(shards)
        assert count == 40 and all(m["origin"] == kind for _, _, m in pairs)
        caps[kind] = [t for _, t, _ in pairs]
        # the sample's own text stays in its record, out of the caption
        own = [m["record"].get("own_text") for _, _, m in pairs]
        assert own[1] == ("a scan 1" if kind == "real" else "prompt 1")
    assert caps["real"] == caps["synthetic"], "same classes, same caption function"
    assert sorted(caps["real"]) == sorted(caps["synthetic"]) and len(set(caps["real"])) > 5
    # the caption templates (class name blanked) form the same multiset too
    names = digits_classes()["name"].tolist()
    blank = {k: sorted(c.replace(names[i % 10], "{}") for i, c in enumerate(v)) for k, v in caps.items()}
    assert blank["real"] == blank["synthetic"]
    overlap = {k: sum(c in zero_shot_prompts() for c in v) / len(v) for k, v in caps.items()}
    assert overlap["real"] == overlap["synthetic"] and (overlap["real"] > 0.5) == in_captions
    assert in_captions or overlap["real"] == 0.0


def test_own_captions_use_each_pairs_own_text(tmp_path):
    syn, real = synthetic_shards(tmp_path / "syn", 10), real_like_shards(tmp_path / "real", 10)
    got = list(P.iter_captioned(syn, 10, "synthetic", captions="own"))
    assert [t for _, _, _, t, _ in got] == [f"prompt {i}" for i in range(10)]
    with pytest.raises(ValueError, match="clip.captions: own, but real sample"):
        list(P.iter_captioned(real, 10, "real", captions="own"))  # half the real images have no caption


def test_a_mixed_run_holds_n_pairs_in_all_interleaved(tmp_path):
    """Synthetic + real at N = n_pairs: N pairs in all (mix_real_fraction of them real, the first ones of
    each part, in order), mixed at the sample level: every stretch holds both in proportion."""
    syn, real = synthetic_shards(tmp_path / "syn", 240, 64), real_like_shards(tmp_path / "real", 240, 64)
    pools = P.caption_pools(digits_classes(), ["classname"])
    parts = P.clip_parts("mixed", 200, real, syn, mix_real_fraction=0.5)
    assert [(k, n) for k, _, n in parts] == [("real", 100), ("synthetic", 100)]
    assert [n for _, _, n in P.clip_parts("mixed", 300, real, syn, 0.25)] == [75, 225]
    shards, count = P.write_caption_shards(tmp_path / "out", parts, pools, seed=0, shard_size=64)
    assert count == 200 and len(shards) == 4
    pairs = read_pairs(shards)
    assert [k for k, _, _ in pairs] == [f"{i:09d}" for i in range(200)]
    origin = np.array([m["origin"] == "real" for _, _, m in pairs])
    assert origin.sum() == 100
    for start in range(0, 200, 40):  # every window of 40 pairs: real share near 0.5
        assert abs(origin[start:start + 40].mean() - 0.5) <= 0.2, (start, origin[start:start + 40].mean())
    own = [m["record"]["own_text"] for _, _, m in pairs if m["origin"] == "synthetic"]
    assert own == [f"prompt {i}" for i in range(100)]  # the first N synthetic images, in order
    keys = [m["record"]["key"] for _, _, m in pairs if m["origin"] == "real"]
    assert keys == [f"{i:08d}" for i in range(100)]
    again, _ = P.write_caption_shards(tmp_path / "again", parts, pools, seed=0, shard_size=64)
    assert [m["origin"] for _, _, m in read_pairs(again)] == [m["origin"] for _, _, m in pairs]  # seeded
    with pytest.raises(ValueError, match="hold 40"):
        P.write_caption_shards(tmp_path / "o2", [("synthetic", synthetic_shards(tmp_path / "s40", 40), 41)], pools, 0)


def test_a_mixed_runs_parts_draw_captions_independently(tmp_path):
    """Real image i and synthetic image i share a class; in a mixed run their captions are separate
    draws from an 81-prompt pool (equal about 1 time in 81, not always), the real part keeps a real
    run's captions, and the synthetic part's captions nest across N."""
    syn, real = synthetic_shards(tmp_path / "syn", 200, 64), real_like_shards(tmp_path / "real", 200, 64)
    pools = P.caption_pools(digits_classes(), ["classname", "templates"])

    def captions(name, parts):
        pairs = read_pairs(P.write_caption_shards(tmp_path / name, parts, pools, seed=0, shard_size=64)[0])
        out = {"real": {}, "synthetic": {}}
        for _, t, m in pairs:
            i = int(m["record"]["key"]) if m["origin"] == "real" else int(m["record"]["own_text"].split()[1])
            out[m["origin"]][i] = t
        return out

    mixed = captions("m200", P.clip_parts("mixed", 200, real, syn, 0.5))
    same = [mixed["real"][i] == mixed["synthetic"][i] for i in range(100)]
    assert sum(same) <= 8, f"{sum(same)} of 100 real/synthetic pairs repeat one draw"
    alone = captions("r100", [("real", real, 100)])
    assert mixed["real"] == alone["real"], "the real part draws as a real run does"
    bigger = captions("m300", P.clip_parts("mixed", 300, real, syn, 0.5))
    assert all(bigger["synthetic"][i] == mixed["synthetic"][i] for i in range(100)), "nested N"


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


class StubClip(torch.nn.Module):
    """A CLIP whose image features are its inputs, with logit scale 1."""

    def __init__(self):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.zeros(()))

    def encode_image(self, x):
        return x


def test_a_class_subset_eval_set_scores_over_its_classes():
    """As the supervised arm (ImageNet-R/-A): only the covered classes compete. Class 1's images lie
    nearest class 3's text, which the subset {0, 1, 2} leaves out: top-1 0 over all, 1 over the subset."""
    clf = F.normalize(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0.2]]), dim=1).T  # (3, 4)
    x = F.normalize(torch.tensor([[0.0, 1, 0.3]] * 4), dim=1)
    batches = [(x[:2], [1, 1]), (x[2:], [1, 1])]
    full = E.evaluate_zero_shot(StubClip(), clf, batches)
    sub = E.evaluate_zero_shot(StubClip(), clf, batches, classes=[0, 1, 2])
    assert full["top1"] == 0.0 and sub["top1"] == 1.0 and sub["n_eval"] == 4
    logits = (x @ clf).double()  # by hand: cross-entropy over the subset's columns, label 1 -> column 1
    want = float((torch.logsumexp(logits[:, :3], 1) - logits[:, 1]).mean())
    assert sub["loss"] == pytest.approx(want) and full["loss"] == pytest.approx(
        float((torch.logsumexp(logits, 1) - logits[:, 1]).mean()))


def test_evaluate_clip_models_reads_each_eval_sets_class_subset(tmp_path):
    """The manifest's subset reaches the zero-shot scoring: a subset set scores like its images
    scored by hand over the subset's columns."""
    prepare_digits(tmp_path, 16, 0.33, [{"name": "test"}, {"name": "sub", "classes": ["0", "1", "2"]}], 1000, 0, **prepared_paths(tmp_path))
    digits_classes().to_csv(tmp_path / "classes.csv", index=False)
    model, preprocess, tok = make_model("test-subset-clip")
    C.save_clip(model.state_dict(), tmp_path / "m" / "model.safetensors",
                {"model": "test-subset-clip", "config": TINY}, tmp_path / "m" / "model_config.json")
    df = E.evaluate_clip_models([tmp_path / "m" / "model.safetensors"], ["10"], [4], tmp_path / "splits.json",
                                tmp_path / "classes.csv", ["test", "sub"], tmp_path / "metrics.csv").set_index("eval_set")
    assert df.loc["sub", "n_classes"] == 3 and df.loc["test", "n_classes"] == 10 and (df["seed"] == 4).all()
    clf = E.zero_shot_classifier(model, tok, digits_classes()["name"].tolist())
    correct, losses = 0, []
    for images, labels in E.eval_loader(split_shards(tmp_path / "splits.json", "sub"), preprocess, 1000):
        logits = E.zero_shot_logits(model, images, clf).double()[:, :3]
        labels = torch.as_tensor(labels)
        correct += int((logits.argmax(1) == labels).sum())
        losses.append(F.cross_entropy(logits, labels, reduction="none"))
    assert df.loc["sub", "top1"] == pytest.approx(correct / df.loc["sub", "n_eval"])
    assert df.loc["sub", "loss"] == pytest.approx(float(torch.cat(losses).mean()), rel=1e-5)


def test_tiny_clip_trains_with_open_clip_train_and_beats_chance(tmp_path, digits):
    real = split_shards(digits / "splits.json", "train")
    from synthscale.study.config import load_schema

    default = load_schema()["properties"]["clip"]["properties"]["model_config"]["default"]
    r = recipe(model="test-train-clip", epochs=16, batch_size=64, lr=2e-3, model_config=default)
    pairs = P.write_clip_pairs(tmp_path / "pairs", P.clip_parts("real", 300, real, [], 0), digits_classes(), r, 0)
    info = C.train_clip(pairs, r, 0, tmp_path / "m" / "model.safetensors", **clip_run_paths(tmp_path / "m"))
    assert info["n_pairs"] == 300 and not (tmp_path / "m" / "work").exists()
    cfg = json.loads((tmp_path / "m" / "model_config.json").read_text())
    assert cfg["model"] == "test-train-clip" and cfg["config"]["embed_dim"] == 64
    df = E.evaluate_clip_models([tmp_path / "m" / "model.safetensors"], ["300"], [0], digits / "splits.json",
                                digits / "classes.csv", ["test"], tmp_path / "metrics.csv")
    row = df.iloc[0]
    assert row["top1"] > 0.15, row  # chance is 0.1; 0.15 is 4 standard errors above it on 594 images
    assert row["loss"] < np.log(10)


def test_train_clip_reads_its_pairs_index_once(tmp_path, digits, monkeypatch):
    """train_clip parses the pairs folder's pairs.json once and hands it to every reader (shards and
    count, shard sizes for the loader check, the run's stamp), none of which reads it again."""
    real = split_shards(digits / "splits.json", "train")
    pairs = P.write_clip_pairs(tmp_path / "pairs", P.clip_parts("real", 64, real, [], 0), digits_classes(),
                               recipe(epochs=1), 0)
    reads, read = [], P.read_pairs_index
    counted = lambda folder: reads.append(Path(folder)) or read(folder)  # noqa: E731
    monkeypatch.setattr(P, "read_pairs_index", counted)
    monkeypatch.setattr(C, "read_pairs_index", counted)
    C.train_clip(pairs, recipe(epochs=1), 0, tmp_path / "m" / "model.safetensors", **clip_run_paths(tmp_path / "m"))
    assert reads == [Path(pairs)] and (tmp_path / "m" / "model.safetensors").exists()


def test_open_clip_train_reruns_are_bit_identical(tmp_path, digits):
    from safetensors.torch import load_file

    real = split_shards(digits / "splits.json", "train")
    parts = P.clip_parts("real", 64, real, [], 0)
    for run in ("a", "b"):  # each run writes its own pairs, as a job does
        pairs = P.write_clip_pairs(tmp_path / run / "pairs", parts, digits_classes(), recipe(epochs=3), 0)
        C.train_clip(pairs, recipe(epochs=3), 0, tmp_path / run / "model.safetensors", **clip_run_paths(tmp_path / run))
    a, b = (load_file(tmp_path / r / "model.safetensors") for r in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pairs = P.write_clip_pairs(tmp_path / "c" / "pairs", parts, digits_classes(), recipe(epochs=3), 1)
    C.train_clip(pairs, recipe(epochs=3), 1, tmp_path / "c" / "model.safetensors", **clip_run_paths(tmp_path / "c"))
    c = load_file(tmp_path / "c" / "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed matters


def test_pairs_folder_is_kept_when_whole_and_rewritten_when_killed(tmp_path, digits):
    """A pairs folder with its index is the job's finished output; one without (a job killed while
    writing) is written again from scratch, to the same shards."""
    real = split_shards(digits / "splits.json", "train")
    parts, r = P.clip_parts("real", 40, real, [], 0), recipe()
    folder = P.write_clip_pairs(tmp_path / "pairs", parts, digits_classes(), r, 0)
    shards, count, part_counts = P.read_clip_pairs(folder)
    assert count == 40 and part_counts == {"real": 40} and all(p.parent == folder for p in shards)
    first = [p.read_bytes() for p in shards]
    (folder / P.PAIRS_INDEX).unlink()
    (folder / "stray.tmp").write_bytes(b"partial")
    P.write_clip_pairs(folder, parts, digits_classes(), r, 0)
    assert not (folder / "stray.tmp").exists()
    assert [p.read_bytes() for p in P.read_clip_pairs(folder)[0]] == first
    mtime = (folder / P.PAIRS_INDEX).stat().st_mtime_ns
    P.write_clip_pairs(folder, parts, digits_classes(), r, 0)  # whole: kept as it is
    assert (folder / P.PAIRS_INDEX).stat().st_mtime_ns == mtime
    # made from other inputs (another N, another seed): written again
    P.write_clip_pairs(folder, P.clip_parts("real", 48, real, [], 0), digits_classes(), r, 0)
    assert P.read_clip_pairs(folder)[1] == 48
    P.write_clip_pairs(folder, P.clip_parts("real", 48, real, [], 0), digits_classes(), r, 1)
    assert json.loads((folder / P.PAIRS_INDEX).read_text())["made_from"]["seed"] == 1


def loader_shares(sizes: list[int], ranks: int, workers: int, order: np.ndarray) -> list[int]:
    """Pairs each open_clip_train loader holds in an epoch: the shards in `order` (its seeded shuffle)
    dealt out by webdataset's split_by_node (rank r takes every ranks-th), then split_by_worker."""
    shares = []
    for r in range(ranks):
        node = order[r::ranks]
        shares += [sum(sizes[i] for i in node[w::max(1, workers)]) for w in range(max(1, workers))]
    return shares


@pytest.mark.parametrize("n, shard_size, workers, ranks", [
    (250_000, 2500, 8, 8),  # fan-clip's smallest N: 100 shards of 2500 over 64 loaders before
    (500_000, 2500, 8, 8), (8_000_000, 2500, 8, 8), (1000, 7, 3, 2), (75, 1000, 0, 1), (130, 1, 64, 2),
])  # fmt: skip
def test_caption_shards_give_every_loader_an_equal_share(n, shard_size, workers, ranks):
    """Whatever order open_clip_train shuffles the shards into, its loaders hold equal shares (within
    a pair a shard), so each loader, which yields the same number of batches as every other, goes
    round its shards about as often: 100 equal shards over 64 loaders gave some loaders one shard and
    others two, and the ones with one read it twice an epoch."""
    loaders = max(1, workers) * ranks
    sizes = S.caption_shard_sizes(n, shard_size, loaders)
    assert sum(sizes) == n and min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert len(sizes) % loaders == 0
    if shard_size >= 2 and n >= 2 * loaders + 2:  # room for whole shards within the size: at most it, and
        # as few as that allows (else 1-pair shards would not divide among the loaders: larger ones)
        assert max(sizes) <= shard_size and len(sizes) < math.ceil(n / shard_size) + loaders
    rng = np.random.default_rng(0)
    for _ in range(20):
        shares = loader_shares(sizes, ranks, workers, rng.permutation(len(sizes)))
        assert max(shares) - min(shares) <= len(sizes) // loaders
    if (n, shard_size, loaders) == (250_000, 2500, 64):  # the fixed-size layout it replaces: 1 or 2 shards
        old = loader_shares([2500] * 100, ranks, workers, rng.permutation(100))
        assert max(old) == 2 * min(old)


def open_clip_epochs(shards: list[Path], n: int, batch: int, workers: int, epochs: int) -> tuple[int, list]:
    """(open_clip_train's planned batches an epoch, the captions each epoch yields) from its own
    webdataset loader (`get_wds_dataset`, with the project's seeded shuffle), on `workers` workers."""
    import argparse

    import open_clip_train.data as ocd

    C._patch_open_clip_train(0)
    args = argparse.Namespace(train_data="::".join(map(str, shards)), val_data=None, dataset_resampled=False,
                              train_num_samples=n, train_data_upsampling_factors=None, seed=0,
                              batch_size=batch, world_size=1, workers=workers)
    data = ocd.get_wds_dataset(args, lambda image: torch.zeros(1), True, 0, tokenizer=lambda text: [text])
    out = []
    for e in range(epochs):
        data.set_epoch(e)
        out.append([t for _, texts in data.dataloader for t in texts])
    return data.dataloader.num_batches, out


def test_open_clip_train_yields_every_planned_batch_from_shards_sized_for_its_loaders(tmp_path, digits):
    """Through open_clip_train's own loader on 2 workers: shards sized for the loaders give every epoch
    all the batches open_clip plans (and `clip_steps_per_epoch` counts, rounded up to whole batches on
    each worker: 10, not ceil(70 / 8) = 9); the fixed-size shards the config check refuses ([3, 3, 2, 2] for batches of 5 on 2 loaders) leave a
    worker without a batch in some epoch."""
    real = split_shards(digits / "splits.json", "train")
    pairs = P.write_clip_pairs(tmp_path / "ok", P.clip_parts("real", 70, real, [], 0), digits_classes(),
                               recipe(shard_size=10, workers=2), 0, loaders=2)
    shards, count, _ = P.read_clip_pairs(pairs)
    planned, epochs = open_clip_epochs(shards, count, 8, 2, 4)
    assert planned == S.clip_steps_per_epoch(70, {"batch_size": 8, "workers": 2}) == 10
    assert all(len(texts) == planned * 8 for texts in epochs)
    bad, n = P.write_caption_shards(tmp_path / "bad", P.clip_parts("real", 10, real, [], 0),
                                    P.caption_pools(digits_classes(), ["classname"]), 0, [3, 3, 2, 2])
    assert n == 10 and S.min_loader_share([3, 3, 2, 2], 2) == 4
    planned, epochs = open_clip_epochs(bad, n, 5, 2, 6)
    assert planned == 2 and min(len(texts) for texts in epochs) < planned * 5


def test_caption_shards_of_a_run_are_sized_for_its_loaders(tmp_path, digits):
    """write_clip_pairs writes as many shards as the training job's loaders need (a multiple of
    them), every pair once, in the same order as one big shard holds them."""
    real = split_shards(digits / "splits.json", "train")
    parts, r = P.clip_parts("real", 42, real, [], 0), recipe(shard_size=1000)
    one = P.read_clip_pairs(P.write_clip_pairs(tmp_path / "one", parts, digits_classes(), r, 0))[0]
    four = P.read_clip_pairs(P.write_clip_pairs(tmp_path / "four", parts, digits_classes(), r, 0, loaders=4))[0]

    def keys(shards):
        return [[m.name for m in tarfile.open(p).getmembers() if m.name.endswith(".txt")] for p in shards]

    assert len(one) == 1 and [len(k) for k in keys(four)] == [11, 11, 10, 10]
    assert sum(keys(four), []) == keys(one)[0]
    with pytest.raises(ValueError, match="3 pairs cannot give each of 4 loaders a shard"):
        S.caption_shard_sizes(3, 1000, 4)


def test_warmup_is_whole_steps_or_a_share_of_each_runs_steps(tmp_path, digits, monkeypatch):
    """clip.warmup of 1 or more is that many steps at every N; below 1 it is that share of each run's
    steps, and the run's open_clip_train command gets the whole steps."""
    r = {"epochs": 32, "batch_size": 512, "min_steps": 0, "warmup": 0.1, "workers": 8}  # fan-clip's
    # open_clip_train rounds an epoch's 62 global batches up to a multiple of its 8 workers: 64
    assert S.clip_steps_per_epoch(250_000, r, 8) == 64 and S.clip_run_steps(250_000, r, 8) == 2048
    assert S.clip_warmup_steps(250_000, r, 8) == round(0.1 * 32 * 64) == 205
    assert S.clip_warmup_steps(8_000_000, r, 8) == round(0.1 * 32 * 1960)
    assert S.clip_warmup_steps(250_000, {**r, "warmup": 2000}, 8) == 2000
    assert S.clip_warmup_steps(250_000, {**r, "warmup": 0}, 8) == 0
    seen = []
    monkeypatch.setattr(C, "run_open_clip_train", lambda argv, *a: seen.append(argv) or (_ for _ in ()).throw(
        RuntimeError("stop")))
    real = split_shards(digits / "splits.json", "train")
    pairs = P.write_clip_pairs(tmp_path / "pairs", P.clip_parts("real", 64, real, [], 0), digits_classes(),
                               recipe(), 0)
    with pytest.raises(RuntimeError, match="stop"):
        C.train_clip(pairs, recipe(warmup=0.25, epochs=4), 0, tmp_path / "m" / "model.safetensors",
                     **clip_run_paths(tmp_path / "m"))
    assert seen[0][seen[0].index("--warmup") + 1] == "2"  # a quarter of 4 epochs x 2 steps


def test_gradient_accumulation_in_extra_args_is_refused(raw):
    """open_clip_train's --accum-freq divides its steps, which the warm-up share and steps count without."""
    raw = copy.deepcopy(raw)
    raw["clip"]["extra_args"] = ["--accum-freq", "2"]
    with pytest.raises(ConfigError, match=r"config key clip.extra_args: --accum-freq"):
        check_config(raw)


@pytest.mark.parametrize("warmup, ok", [(5, True), (15, True), (16, False), (0.5, True), (0.6, False), (2.5, False)])
def test_a_warmup_longer_than_half_the_smallest_run_is_refused(raw, warmup, ok):
    """The smallest default CLIP run (N = 75, batch 32: 3 steps an epoch, 10 epochs) has 30 steps: a
    warm-up of more than 15 keeps the learning rate climbing for most of it."""
    raw = copy.deepcopy(raw)
    raw["clip"]["warmup"] = warmup
    if ok:
        check_config(raw)
    else:
        with pytest.raises(ConfigError, match=r"config key clip.warmup: "):
            check_config(raw)


def test_a_run_whose_loaders_cannot_each_fill_a_batch_is_refused_before_it_starts(tmp_path, digits):
    """train_clip checks its pairs folder against its loaders (clip.workers x GPUs) before it starts
    any rank: 40 pairs in one shard cannot feed 2 ranks; sized for them (2 shards of 20) they feed
    batches of 20 but not of 32."""
    real = split_shards(digits / "splits.json", "train")
    parts = P.clip_parts("real", 40, real, [], 0)
    one = P.write_clip_pairs(tmp_path / "one", parts, digits_classes(), recipe(), 0)
    two = P.write_clip_pairs(tmp_path / "two", parts, digits_classes(), recipe(), 0, loaders=2)
    assert P.clip_pair_sizes(P.read_pairs_index(one)) == [40] and P.clip_pair_sizes(P.read_pairs_index(two)) == [20, 20]
    model = tmp_path / "m" / "model.safetensors"
    with pytest.raises(ValueError, match=r"clip.batch_size: 32 pairs a batch is more than the 0 pairs one of the "
                                         r"run's 2 loaders"):
        C.train_clip(one, recipe(batch_size=32), 0, model, gpus=2, **clip_run_paths(model.parent))
    with pytest.raises(ValueError, match=r"clip.batch_size: 32 pairs a batch is more than the 20 pairs"):
        C.train_clip(two, recipe(batch_size=32), 0, model, gpus=2, **clip_run_paths(model.parent))


def test_epochs_stretch_to_min_steps():
    assert S.clip_epochs(300, {"epochs": 2, "batch_size": 64, "min_steps": 0}) == 2
    assert S.clip_epochs(300, {"epochs": 2, "batch_size": 64, "min_steps": 50}) == 10
    # on 4 GPUs a step takes 4 x 64 pairs (open_clip_train's global batch): 2 steps a pass, not 5
    assert S.clip_steps_per_epoch(300, {"batch_size": 64}, 4) == 2
    assert S.clip_epochs(300, {"epochs": 2, "batch_size": 64, "min_steps": 50}, 4) == 25


def test_scaling_fit_recovers_slope_and_ratio():
    rows = []
    for src, k in [("real", 0.4), ("synthetic/g/g2/classname", 0.2), ("mixed/g/g2/classname", 0.3)]:
        for n in (100, 200, 400, 800):
            rows.append({**CR.clip_source_columns(src), "eval_set": "test", "n": n, "n_label": str(n),
                         "loss": 3 * n ** -k, "top1": 0.5})
    s = pd.DataFrame(rows)
    fits = CR.clip_scaling(s).set_index("source")
    assert fits.loc["real", "k"] == pytest.approx(0.4)
    assert fits.loc["synthetic/g/g2/classname", "k_ratio_to_real"] == pytest.approx(0.5)
    assert fits.loc["real", "k_lo"] == pytest.approx(0.4) and fits.loc["real", "B"] == pytest.approx(3)
    text = " ".join(CR.clip_findings(s.assign(ood=False), fits.reset_index(), 10, "test"))
    assert "k = 0.200" in text and "ratio of 0.50" in text and "0.355" in text
    two = s[s["n"].isin([100, 200])]
    text = " ".join(CR.clip_findings(two.assign(ood=False), CR.clip_scaling(two), 10, "test"))
    assert "only 2 N values" in text and "ratio of" not in text, "two points give no slope worth a ratio"


def test_clip_summary_and_plot(tmp_path):
    paths = []
    for i, src in enumerate(["real", "synthetic/g/g2/c", "mixed/g/g2/c"]):
        p = tmp_path / f"{i}.csv"
        pd.DataFrame({"n_label": ["10", "20"] * 2, "eval_set": ["test"] * 2 + ["rot"] * 2,
                      "loss": [2.0, 1.5, 2.1, 1.9], "top1": [0.2, 0.3, 0.1, 0.2]}).to_csv(p, index=False)
        paths.append(p)
    s = CR.build_clip_summary(["real", "synthetic/g/g2/c", "mixed/g/g2/c"], paths, {"rot": True})
    assert s[s["kind"] == "mixed"]["n_pairs"].tolist() == [10, 20, 10, 20], "N is the total pairs of every kind"
    assert s[s["eval_set"] == "rot"]["ood"].all()
    CR.plot_clip_scaling(s, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    t = CR.zero_shot_table(s, 10)
    assert {"top1_test", "loss_rot", "chance_top1_test", "seeds"} <= set(t.columns) and len(t) == 6
    out = {k: tmp_path / "report" / f"{k}.{ext}" for k, ext in
           (("summary", "csv"), ("scaling", "csv"), ("table", "csv"), ("plot", "png"), ("findings", "html"))}
    (tmp_path / "manifest.json").write_text('{"classes": 10}')
    CR.write_clip_report(
        ["real", "synthetic/g/g2/c", "mixed/g/g2/c"], paths, {"rot": True}, tmp_path / "manifest.json", "test", "st", out
    )
    assert pd.read_csv(out["table"]).shape == t.shape and out["plot"].stat().st_size > 1000
    page = out["findings"].read_text()
    assert "st: CLIP" in page
    assert "CLIP tables (report/ in its results folder)" in page, "the page names its folder within the results"
    write_csv(tmp_path / "t.csv", t)
    assert out["table"].read_bytes() == (tmp_path / "t.csv").read_bytes(), "the manifest's 10 classes, as before"


def test_chance_is_per_eval_set_from_the_classes_it_scores_over():
    """A subset eval set (ImageNet-R: 200 classes) has chance 1/200, not 1 over the manifest's 1000, in
    the zero-shot table and in the findings; the table says how many seeds each row averages."""
    rows = [{**CR.clip_source_columns(src), "eval_set": e, "n": n, "n_pairs": n, "seed": sd, "n_classes": c,
             "loss": 5.0 - 0.001 * n - 0.01 * sd, "top1": 0.02, "ood": e == "imagenet-r"}
            for src, seeds in (("real", [0, 1, 2]), ("synthetic/g/g2/c", [0]))
            for e, c in (("val", 1000), ("imagenet-r", 200)) for n in (100, 200) for sd in seeds]
    s = pd.DataFrame(rows)
    t = CR.zero_shot_table(s, 1000).set_index(["source", "n"])
    assert t["chance_top1_imagenet-r"].eq(0.005).all() and t["chance_top1_val"].eq(0.001).all()
    assert t.loc[("real", 200), "seeds"] == 3 and t.loc[("synthetic/g/g2/c", 200), "seeds"] == 1
    first = CR.clip_findings(s, pd.DataFrame(columns=["eval_set", "kind"]), 1000, "imagenet-r")[0]
    assert "+0.015 against chance (0.005 over its 200 classes, 4.0 times chance)" in first
    assert f"against {math.log(200):.3f} for uniform logits" in first


@pytest.fixture
def raw():
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg.setdefault("clip", {})["enabled"] = True
    return cfg


def test_plan_lists_clip_sources_and_paths(raw):
    raw["clip"].update({"sources": [{"generator": "tinydigits", "guidance": 2.0, "strategy": "classname"}],
                        "n_images": [100, 200], "seeds": [0], "real_seeds": [0, 1]})
    cfg = check_config(raw)
    plan = Plan(cfg)
    assert plan.clip_sources() == ["real", "synthetic/tinydigits/g2/classname", "mixed/tinydigits/g2/classname"]
    assert plan.clip_mix_real_fraction() == 0.5
    assert plan.clip_seed_runs("real") == [("100", 0), ("100", 1), ("200", 0), ("200", 1)]
    assert len(plan.clip_runs()) == 8 and plan.clip_seed_runs("mixed/tinydigits/g2/classname") == [("100", 0), ("200", 0)]
    assert plan.clip_model("mixed/tinydigits/g2/classname", 100, 0).endswith(
        "clip/mixed/tinydigits/g2/classname/n100/s0/model.safetensors")
    run = f"{cfg['results']}/clip/real/n100/s1"  # train_clip's own files, where they always were
    paths = [f("real", 100, 1) for f in (plan.clip_model_config, plan.clip_work_dir, plan.clip_train_log)]
    assert paths == [f"{run}/model_config.json", f"{run}/work", f"{run}/train.log"]
    assert parse_source("mixed/tinydigits/g2/classname").kind == "mixed"
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
        ({"mix_real_fraction": 1.5}, "clip.mix_real_fraction"),
        ({"mix_real_fraction": 1.0}, "clip.mix_real_fraction"),
        ({"mix_real_fraction": 0}, "clip.mix_real_fraction"),
        ({"captions": "mine"}, "clip.captions"),
        ({"launcher": ["torchrun", "--nproc_per_node=8"]}, "clip.launcher"),
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
    fits = CR.clip_scaling(s)
    assert fits["k"].iloc[0] == pytest.approx(0.3) and np.isnan(fits["k_lo"].iloc[0])
    assert fits["k_interval"].iloc[0].startswith("undetermined")


def test_a_resumed_run_reaches_the_same_weights(tmp_path, digits, capfd):
    """A job killed after epoch 1 (its work folder holds epoch_1.pt), while it saved epoch_2.pt (open_clip
    writes it in place: a truncated newest checkpoint, which `--resume latest` would pick and fail on at
    every retry), resumes from epoch_1.pt to bit-identical weights."""
    from safetensors.torch import load_file

    real = split_shards(digits / "splits.json", "train")
    parts = P.clip_parts("real", 64, real, [], 0)
    r = recipe(epochs=2, save_frequency=1)
    pairs = P.write_clip_pairs(tmp_path / "pairs", parts, digits_classes(), r, 0)
    C.train_clip(pairs, r, 0, tmp_path / "full" / "model.safetensors", **clip_run_paths(tmp_path / "full"))
    # the "killed" job's work folder: open_clip_train stopped after epoch 1; the job's paths are the
    # rule's (from Plan), here away from the model, so none is derived from the model's path
    work, log, config = tmp_path / "w" / "open_clip", tmp_path / "logs" / "clip.log", tmp_path / "c" / "cfg.json"
    shards, count, _ = P.read_clip_pairs(pairs)
    C._start_over_if_changed(work, C.open_clip_run(pairs, r, 0, work, "cpu", 1)[1])  # stamped as train_clip does
    C.register_model(r["model"], r["model_config"], work / C.CONFIG_DIR)
    C.run_open_clip_train(C.open_clip_argv(shards, count, {**r, "epochs": 1}, 0, work, "cpu"), 0, work / C.CONFIG_DIR)
    ckpts = work / C.OPEN_CLIP_RUN / "checkpoints"
    assert (ckpts / "epoch_1.pt").exists()
    (ckpts / "epoch_2.pt").write_bytes((ckpts / "epoch_1.pt").read_bytes()[:50_000])  # killed mid-save
    capfd.readouterr()
    C.train_clip(pairs, r, 0, tmp_path / "resumed" / "model.safetensors", work_dir=work, log_path=log,
                 config_path=config)
    assert "starting over" not in capfd.readouterr().err  # the same run: its stamp matches
    assert [p.name for p in (tmp_path / "resumed").iterdir()] == ["model.safetensors"] and not work.exists()
    assert json.loads(config.read_text()) == json.loads((tmp_path / "full" / "model_config.json").read_text())
    before, after = log.read_text().split("resuming checkpoint", 1)
    assert "Start epoch 0" in before and "Start epoch 0" not in after and "Start epoch 1" in after
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("change", ["lr", "captions"])
def test_a_work_folder_left_by_a_run_with_other_settings_is_started_over(tmp_path, digits, capfd, change):
    """A killed job's work folder is resumed only by the same run: after a recipe change (the learning
    rate) or pairs rewritten from other inputs (another caption pool: the same shard paths, so the same
    open_clip_train arguments), its epoch checkpoint would continue under the new settings, so the job
    starts over and reaches a fresh run's weights."""
    from safetensors.torch import load_file

    real = split_shards(digits / "splits.json", "train")
    parts = P.clip_parts("real", 64, real, [], 0)
    r = recipe(epochs=2, save_frequency=1)
    old = {**r, "lr": 0.01} if change == "lr" else {**r, "caption_strategies": ["classname"]}
    pairs = P.write_clip_pairs(tmp_path / "pairs", parts, digits_classes(), old, 0)
    work = tmp_path / "stale" / "work"  # the old run's job, killed after epoch 1 of 2
    C._start_over_if_changed(work, C.open_clip_run(pairs, old, 0, work, "cpu", 1)[1])
    C.register_model(r["model"], r["model_config"], work / C.CONFIG_DIR)
    shards, count, _ = P.read_clip_pairs(pairs)
    C.run_open_clip_train(C.open_clip_argv(shards, count, {**old, "epochs": 1}, 0, work, "cpu"), 0,
                          work / C.CONFIG_DIR)
    assert (work / C.OPEN_CLIP_RUN / "checkpoints" / "epoch_1.pt").exists()
    pairs = P.write_clip_pairs(tmp_path / "pairs", parts, digits_classes(), r, 0)  # the new run's pairs
    C.train_clip(pairs, r, 0, tmp_path / "fresh" / "model.safetensors", **clip_run_paths(tmp_path / "fresh"))
    capfd.readouterr()
    C.train_clip(pairs, r, 0, tmp_path / "stale" / "model.safetensors",
                 **{**clip_run_paths(tmp_path / "stale"), "work_dir": work})
    assert "holds a CLIP run made with other settings: starting over" in capfd.readouterr().err
    assert "resuming checkpoint" not in (tmp_path / "stale" / "train.log").read_text()
    a, b = load_file(tmp_path / "fresh" / "model.safetensors"), load_file(tmp_path / "stale" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_unreadable_newest_checkpoint_is_removed_and_the_previous_kept(tmp_path, capfd):
    """Newest by open_clip's natural order (epoch_10 after epoch_9): removed while it does not load,
    with a warning on stderr; a readable newest, or an empty folder, is left as it is."""
    assert C.drop_unreadable_checkpoints(tmp_path / "none") == []
    for k in (2, 9):
        torch.save({"epoch": k, "state_dict": {"w": torch.ones(3)}}, tmp_path / f"epoch_{k}.pt")
    whole = (tmp_path / "epoch_9.pt").read_bytes()
    (tmp_path / "epoch_10.pt").write_bytes(whole[: len(whole) // 2])  # killed during torch.save
    assert C.drop_unreadable_checkpoints(tmp_path) == [tmp_path / "epoch_10.pt"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["epoch_2.pt", "epoch_9.pt"]
    assert "warning: removing the truncated checkpoint" in capfd.readouterr().err
    assert C.drop_unreadable_checkpoints(tmp_path) == []
    assert torch.load(tmp_path / "epoch_9.pt", weights_only=True)["epoch"] == 9
    # a whole file that a resume may still refuse (another format, a read error) is never deleted,
    # and at most one file goes (one save can be cut short): the previous good one stays
    (tmp_path / "epoch_11.pt").write_bytes(b"not a zip")
    (tmp_path / "epoch_12.pt").write_bytes(whole[:100])
    assert C.drop_unreadable_checkpoints(tmp_path) == [tmp_path / "epoch_12.pt"]
    assert (tmp_path / "epoch_11.pt").exists()


def _real_rows(losses: dict[int, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{**CR.clip_source_columns("real"), "eval_set": "test", "n": n, "seed": s, "loss": l,
                          "top1": 0.5, "ood": False} for n, ls in losses.items() for s, l in enumerate(ls)])


def test_findings_say_whether_reals_loss_falls_beyond_its_seed_noise():
    """Per-N means over seeds, with the seed SD: a fall larger than the 95% t margin of the difference
    (t(0.975, df) x pooled seed SD x sqrt(1/n_first + 1/n_last)) is stated as a fall, a smaller one as
    weak, a rise as no scaling."""
    clear = CR.seed_means(_real_rows({75: [2.10, 2.12], 150: [1.90, 1.92], 300: [1.60, 1.62]}))
    assert clear.set_index("n").loc[75, "loss"] == pytest.approx(2.11) and clear["seeds"].eq(2).all()
    text = CR.real_trend(clear, "test")
    assert "2.110 ± 0.014 at N = 75" in text and "falls at every step, by 0.500" in text
    # by hand: each N's SD is 0.02 / sqrt(2); 3 N x (2 - 1) = 3 degrees of freedom, t(0.975, 3) = 3.182446
    margin = 3.182446 * (0.02 / math.sqrt(2)) * math.sqrt(1 / 2 + 1 / 2)
    assert f"({margin:.3f}: t = 3.18 with 3 degrees of freedom" in text and "over 2 seeds" in text
    uneven = CR.real_trend(CR.seed_means(_real_rows({75: [2.10, 2.12, 2.11], 150: [1.90, 1.92]})), "test")
    assert "over 2-3 seeds" in uneven
    noisy = CR.seed_means(_real_rows({75: [2.3, 1.9], 150: [2.2, 1.8], 300: [2.1, 1.8]}))
    assert "weak result" in CR.real_trend(noisy, "test")
    flat = CR.seed_means(_real_rows({75: [1.9, 1.91], 150: [1.95, 1.96], 300: [1.97, 1.98]}))
    assert "does not fall with N" in CR.real_trend(flat, "test")
    one = CR.seed_means(_real_rows({75: [2.1], 150: [1.9], 300: [1.6]}))
    assert "one seed per N nothing measures its noise" in CR.real_trend(one, "test")
    sentences = CR.clip_findings(_real_rows({75: [2.10, 2.12], 150: [1.90, 1.92], 300: [1.60, 1.62]}),
                                 pd.DataFrame(columns=["eval_set", "kind"]), 10, "test")
    assert any("falls at every step" in s for s in sentences)
    assert any("300 real image-text pairs" in s and "1.610" in s for s in sentences), "the mean over seeds"


def _rows(source: str, losses: dict[int, list[float]]) -> pd.DataFrame:
    return _real_rows(losses).assign(**CR.clip_source_columns(source))


def test_loss_comparisons_at_the_largest_n_are_judged_against_seed_noise():
    """A difference of seed means against real's is stated only beyond the 95% t margin from real's
    pooled single-run seed SD (N with >= 2 seeds), with each side's seed count; within it, or with no
    SD, undetermined. The same for which source has the lowest loss."""
    real = {75: [2.10, 2.12], 150: [1.90, 1.92], 300: [1.60, 1.64], 600: [1.50]}  # N = 600: one seed, no SD
    sd, df = CR.pooled_loss_sd(CR.seed_means(_real_rows(real)))
    assert (sd, df) == (pytest.approx(0.02), 3)  # by hand: variances 0.0002, 0.0002, 0.0008 over 3 df
    margin = 3.182446 * 0.02 * math.sqrt(1 / 1 + 1 / 2)  # t(0.975, 3); 1 seed against real's 2 at N = 300
    assert CR.diff_margin(0.02, 3, 1, 2)[0] == pytest.approx(margin, rel=1e-5)
    assert margin == pytest.approx(0.0780, abs=1e-4)

    def findings(syn_loss, mixed_loss, real_losses=real):
        s = pd.concat([_real_rows(real_losses), _rows("synthetic/g/g2/c", {150: [2.0], 300: [syn_loss]}),
                       _rows("mixed/g/g2/c", {150: [2.0], 300: [mixed_loss]})], ignore_index=True)
        return CR.loss_comparisons(CR.seed_means(s))

    out = findings(1.70, 1.58)  # real's mean at 300: 1.62; +0.08 beyond 0.078, -0.04 within it
    syn = next(x for x in out if x.startswith("On test at N = 300, synthetic ("))
    assert "above real's 1.620 by 0.080, beyond the noise" in syn and f"95% margin {margin:.3f}" in syn
    assert "t = 3.18 with 3 degrees of freedom" in syn and "1 against 2 seeds" in syn
    mixed = next(x for x in out if "synthetic + real" in x and "has zero-shot loss" in x)
    assert "-0.040 against real's 1.620: undetermined, within the noise" in mixed
    lowest = next(x for x in out if "lowest" in x)
    assert "synthetic + real" in lowest and "undetermined, within the noise" in lowest
    lowest = next(x for x in findings(1.70, 1.40) if "lowest" in x)
    assert "by 0.220, beyond the noise" in lowest
    one_seed = findings(1.70, 1.40, {n: v[:1] for n, v in real.items()})
    assert all("undetermined, no noise estimate" in x for x in one_seed if "has zero-shot loss" in x or "lowest" in x)


def test_scaling_table_counts_n_values_not_seed_rows():
    rows = _real_rows({75: [2.10, 2.12], 150: [1.90, 1.92], 300: [1.60, 1.64]})
    fit = CR.clip_scaling(rows).iloc[0]
    assert fit["n_points"] == 3 and fit["loss_at_max_n"] == pytest.approx(1.62)


def test_a_clip_launcher_prefix_runs_the_entry_and_relays_its_output(tmp_path, capfd):
    """`clip.launcher` (e.g. [torchrun, --nproc_per_node=8]) starts `PREFIX -m synthscale.clip.train
    --synthscale-config-dir DIR ARGS`; its output goes to the job's stderr line by line and a failed
    launch raises, naming its exit code. A shell stands in for torchrun: it prints what it was given."""
    fake = ["sh", "-c", 'echo "launched: $*"; echo "to stderr" >&2; exit "$EXIT"', "sh"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXIT", "0")
        C.launch(C.launch_command(fake, 1, ["--seed", "3", "--epochs", "2"], tmp_path / "cfg"))
        out, err = capfd.readouterr()
        assert out == "" and err == f"launched: -m synthscale.clip.train --synthscale-config-dir {tmp_path / 'cfg'} " \
                                     "--seed 3 --epochs 2\nto stderr\n", err
        mp.setenv("EXIT", "3")
        with pytest.raises(RuntimeError, match=r"sh -c .* exited with 3"):
            C.launch(C.launch_command(fake, 1, ["--seed", "3"], tmp_path / "cfg"))


def test_clip_ranks_get_their_share_of_the_jobs_threads(tmp_path, capfd, monkeypatch):
    """job_setup sets OMP_NUM_THREADS to all of the job's threads, and torchrun keeps a set value: the
    launched command gets threads / ranks (rank_threads: 8 ranks on 64 threads get 8 each, not 64), as
    run_torchrun gives the classifier's ranks. A shell stands in for torchrun: it prints the variable."""
    monkeypatch.setenv("OMP_NUM_THREADS", "64")  # as job_setup leaves it in a 64-thread job
    fake = ["sh", "-c", 'echo "omp=$OMP_NUM_THREADS"', "sh"]
    C.launch(C.launch_command(fake, 8, ["--seed", "3"], tmp_path / "cfg"), nproc=8, threads=64)
    assert capfd.readouterr().err == "omp=8\n"
    C.launch(C.launch_command(fake, 1, ["--seed", "3"], tmp_path / "cfg"), nproc=1, threads=3)
    assert capfd.readouterr().err == "omp=3\n"  # one process keeps the job's threads


def test_several_clip_gpus_start_torchrun_standalone_with_one_rank_each(tmp_path, digits, monkeypatch):
    """resources.clip.gpu > 1 starts `python -m torch.distributed.run --standalone --nproc_per_node=GPUS
    -m synthscale.clip.train ...` (distributed.torchrun_command, as the classifier's jobs): without
    --standalone, torchrun meets its ranks at the fixed port 29500 and two jobs on one node collide.
    A torchrun clause in clip.launcher (the old way to ask for DDP, without --standalone) is refused."""
    import sys

    parts = P.clip_parts("real", 64, split_shards(digits / "splits.json", "train"), [], 0)
    pairs = P.write_clip_pairs(tmp_path / "pairs", parts, digits_classes(), recipe(), 0, loaders=4)
    started = []

    def fake_launch(cmd, nproc=1, threads=None):
        started.append((list(cmd), nproc, threads))
        raise SystemExit("stop before training")

    monkeypatch.setattr(C, "launch", fake_launch)
    with pytest.raises(SystemExit):
        C.train_clip(pairs, recipe(batch_size=16, min_steps=8), 0, tmp_path / "m" / "model.safetensors",
                     gpus=4, threads=16, **clip_run_paths(tmp_path / "m"))
    (cmd, nproc, threads), = started
    assert cmd[cmd.index("--epochs") + 1] == "8"  # 64 pairs at 4 x 16 a step: 1 step a pass, 8 passes
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert cmd[5:9] == ["-m", "synthscale.clip.train", "--", "--synthscale-config-dir"] and (nproc, threads) == (4, 16)
    for launcher in (["torchrun", "--nproc_per_node=8"], ["/opt/bin/torchrun"], ["python", "-m", "torch.distributed.run"]):
        with pytest.raises(ValueError, match="leave it empty"):
            C.check_launcher(launcher)
    C.check_launcher(["srun", "--ntasks=1"])


CLIP_JOB = """
import sys
from synthscale.clip.train import launch, launch_command
from synthscale.preemption import PREEMPTED_EXIT, Preempted
try:
    launch(launch_command([sys.executable, sys.argv[1], sys.argv[2]], 1, ["--seed", "3"], sys.argv[3]))
except Preempted as err:  # as scripts/train_clip.py maps it
    print("PREEMPTED", err, flush=True)
    sys.exit(PREEMPTED_EXIT)
"""

FAKE_TORCHRUN = """
import pathlib, signal, sys, time
mark = pathlib.Path(sys.argv[1])
def on_term(signum, _frame):  # torchrun passes the signal on to its ranks, then exits 1
    mark.write_text(signal.Signals(signum).name)
    sys.exit(1)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
time.sleep(60)
"""


def test_sigterm_to_the_clip_job_reaches_the_launched_training_and_exits_75(tmp_path):
    """SLURM's SIGTERM (before the time limit, or on preemption) may reach the job's main process
    only: `clip.launcher` passes it on to the launched training (a stand-in for torchrun records it),
    which stops, and the job exits 75 (preempted: the retry resumes from open_clip's newest epoch
    checkpoint) instead of dying at once and leaving the training running unowned."""
    import os
    import signal
    import subprocess
    import sys

    fake = tmp_path / "fake_torchrun.py"
    fake.write_text(FAKE_TORCHRUN)
    mark = tmp_path / "signalled"
    proc = subprocess.Popen([sys.executable, "-c", CLIP_JOB, str(fake), str(mark), str(tmp_path / "cfg")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, start_new_session=True)
    try:
        for line in proc.stderr:  # the launcher's output, relayed to the job's stderr
            if line.strip() == b"ready":
                break
        proc.send_signal(signal.SIGTERM)  # the job's main process only
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 75, (proc.returncode, out, err)
        assert b"PREEMPTED" in out
        assert mark.read_text() == "SIGTERM", "the launched training got the signal"
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # an orphaned stand-in, on failure


def test_torchrun_hands_open_clips_arguments_to_every_rank_untouched(monkeypatch):
    """torchrun's own parser reads option-like words after `-m MODULE` too: open_clip's `--logs` is an
    ambiguous prefix of torchrun's `--logs-specs`, and the job died with exit 2 before any rank
    started. Parsed by torch's own parser, the command gives the module exactly our arguments, and
    the module's entry takes them with or without the separator torchrun may pass on."""
    from torch.distributed.run import parse_args

    import synthscale.clip.train as clip_train

    ours = ["--logs", "/tmp/logs", "--train-data", "a.tar", "--seed", "3", "--workers", "2"]
    cmd = clip_train.launch_command([], 2, ours, "/tmp/configs")
    args = parse_args(cmd[3:])  # [python, -m, torch.distributed.run, ...torchrun's arguments]
    assert args.module and args.training_script == clip_train.ENTRY and args.nproc_per_node == "2"
    passed = [a for a in args.training_script_args if a != "--"]
    assert passed == ["--synthscale-config-dir", "/tmp/configs", *ours]
    seen = []
    monkeypatch.setattr(clip_train, "run_open_clip_train", lambda argv, seed, config_dir: seen.append((argv, seed, config_dir)))
    clip_train.main(list(args.training_script_args))
    clip_train.main(["--", *passed])
    assert seen == [(ours, 3, "/tmp/configs")] * 2


def test_each_epoch_of_any_seed_reseeds_torch_apart():
    """The per-epoch torch seed of the CLIP crops differs between epochs and seeds, long seeds too
    (keeping the low 63 bits of the text's bytes gave every epoch of seed 1234567 one seed), and is
    unchanged for the short texts the default study's seeds make."""
    keys = {(seed, e): C._seed_key(f"{seed}-{e}") for seed in (0, 2, 123456, 1234567, 2**40) for e in range(40)}
    assert len(set(keys.values())) == len(keys) and all(0 <= k < 2**63 for k in keys.values())
    assert C._seed_key("2-9") == int.from_bytes(b"2-9", "little")


@pytest.mark.parametrize("source", ["real", "mixed/g/g2/c"])
def test_make_clip_pairs_writes_what_clip_parts_and_write_clip_pairs_wrote(tmp_path, digits, source):
    """The rule clip_pairs' entry: the real part the manifest's
    train split, the classes its class table; the folder is byte for byte the old call sequence's."""
    real = split_shards(digits / "splits.json", "train")
    syn = [str(s) for s in real[::-1]]
    kind = parse_source(source).kind
    old = P.write_clip_pairs(tmp_path / "old", P.clip_parts(kind, 64, real, syn, 0.25),
                             read_classes(digits / "classes.csv"), recipe(epochs=1), 3, 2)
    new = P.make_clip_pairs(tmp_path / "new", kind, 64, digits / "splits.json", syn, digits / "classes.csv", 0.25,
                            recipe(epochs=1), 3, 2)
    files = sorted(p.relative_to(old) for p in Path(old).rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(new) for p in Path(new).rglob("*") if p.is_file()) and files
    assert all((Path(old) / f).read_bytes() == (Path(new) / f).read_bytes() for f in files)
