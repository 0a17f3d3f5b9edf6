"""Streaming ImageFolder preparation: interleaved order, bad files, class subsets, encodings, WordNet."""
import io
import itertools
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers.data import prepared_paths
from helpers.require import require_or_skip
from synthscale.data import wordnet
from synthscale.study.config import ConfigError, check_config
from synthscale.data.real import read_classes_table, split_shards
from synthscale.data.imagefolder import (
    TooManyBadFiles,
    _interleave_good,
    prepare_imagefolder,
    scan_imagefolder,
)
from synthscale.data.shards import load_arrays

C, PER_CLASS, PER_CLASS_TEST = 20, 100, 10
COLOURS = np.array(list(itertools.product([20, 90, 160, 230], [20, 90, 160, 230], [40, 200]))[:C])
IDS = [f"c{k:02d}" for k in range(C)]
SUBSET = IDS[:5]  # the subset eval set; its last class folder is empty


def _image(rng, c, size=(32, 24)):
    """A 32x24 (w x h) image of class c's colour with a little noise."""
    noise = rng.integers(-12, 13, size=(size[1], size[0], 3))
    return Image.fromarray(np.clip(COLOURS[c] + noise, 0, 255).astype(np.uint8))


def _dataset(root, train_dir, test_dir, **over):
    ds = {"name": "toy", "kind": "imagefolder", "image_size": 12, "channels": 3,
          "train_dir": str(train_dir), "test_dir": str(test_dir), "classes_csv": str(root / "classes.csv"),
          "storage_size": None, "center_crop": True, "encoding": {"format": "jpeg", "quality": 90},
          "max_bad_fraction": 0.01}
    return {**ds, **over}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """~2000 JPEGs over 20 classes, a truncated JPEG, a text file named .jpg, a subset eval set."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split, n, classes in (("train", PER_CLASS, IDS), ("val", PER_CLASS_TEST, IDS),
                              ("sub", PER_CLASS_TEST, SUBSET[:-1])):
        for c, cid in enumerate(classes):
            (root / split / cid).mkdir(parents=True)
            for i in range(n):
                _image(rng, c).save(root / split / cid / f"{cid}_{i:04d}.jpg", quality=95)
    (root / "sub" / SUBSET[-1]).mkdir()  # an empty class folder in the eval set
    truncated = root / "train" / "c03" / "c03_0007.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    (root / "train" / "c05" / "c05_0011.jpg").write_text("this is not an image\n")
    (root / "train" / "c05" / "notes.txt").write_text("not an image extension: never scanned\n")
    pd.DataFrame({"id": IDS, "name": [f"class {k}" for k in range(C)]}).to_csv(root / "classes.csv", index=False)
    return root


@pytest.fixture(scope="module")
def prepared(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    ds = _dataset(folder, folder / "train", folder / "val")
    evs = [{"name": "test"}, {"name": "sub", "root": str(folder / "sub"), "classes": SUBSET}]
    manifest = prepare_imagefolder(out, ds, evs, shard_size=256, seed=0, workers=2, **prepared_paths(out))
    return out, manifest


def test_shards_counts_and_bad_files_in_manifest(prepared):
    out, m = prepared
    assert m == json.loads((out / "splits.json").read_text())
    train = m["splits"]["train"]
    assert train["count"] == C * PER_CLASS - 2
    assert len(train["shards"]) == math.ceil(train["count"] / 256)
    assert all((out / s).is_file() for s in train["shards"])
    assert train["n_bad"] == 2
    assert sorted(Path(p).name for p in train["bad_files"]) == ["c03_0007.jpg", "c05_0011.jpg"]
    assert train["per_class"][3] == train["per_class"][5] == PER_CLASS - 1
    assert m["splits"]["test"]["count"] == C * PER_CLASS_TEST and m["splits"]["test"]["n_bad"] == 0


def test_training_order_is_interleaved_and_labels_match_pixels(prepared):
    out, _ = prepared
    x, y, recs = load_arrays(split_shards(out / "splits.json", "train"))
    assert x.shape == (C * PER_CLASS - 2, 12, 12, 3)
    # a skipped file's slot goes to the next image of its class: every prefix of whole rounds is balanced
    assert y[: C * (PER_CLASS - 1)].tolist() == list(range(C)) * (PER_CLASS - 1)
    nearest = np.argmin(((x.reshape(len(x), -1, 3).mean(1)[:, None] - COLOURS[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest, y)
    assert [r["key"] for r in recs[:3]] == ["00000000", "00000001", "00000002"]
    assert all(r["file"].startswith(IDS[r["label"]] + "/") for r in recs)
    assert len({r["file"] for r in recs}) == len(recs)


def test_eval_set_covers_a_class_subset_and_reports_empty_classes(prepared):
    out, m = prepared
    sub = m["splits"]["sub"]
    assert sub["classes"] == [0, 1, 2, 3, 4]
    assert sub["empty_classes"] == [SUBSET[-1]]
    assert sub["count"] == 4 * PER_CLASS_TEST and sub["per_class"][4] == 0
    assert "classes" not in m["splits"]["test"] and m["splits"]["test"]["empty_classes"] == []
    _, y, _ = load_arrays(split_shards(out / "splits.json", "sub"))
    assert sorted(set(y.tolist())) == [0, 1, 2, 3]


def test_too_many_bad_files_fails_naming_them(folder, tmp_path):
    ds = _dataset(folder, folder / "train", folder / "val", max_bad_fraction=0.0005)
    with pytest.raises(TooManyBadFiles, match=r"c03_0007\.jpg.*c05_0011\.jpg|c05_0011\.jpg.*c03_0007\.jpg") as e:
        prepare_imagefolder(tmp_path, ds, [{"name": "test"}], 256, 0, **prepared_paths(tmp_path))
    assert "max_bad_fraction" in str(e.value)
    assert not (tmp_path / "splits.json").exists()


def _small_tree(root, n_classes=2, n=3, size=(32, 24)):
    rng = np.random.default_rng(1)
    for c in range(n_classes):
        (root / f"k{c}").mkdir(parents=True)
        for i in range(n):
            _image(rng, c, size).save(root / f"k{c}" / f"{i}.png")
    pd.DataFrame({"id": [f"k{c}" for c in range(n_classes)], "name": ["a", "b", "c"][:n_classes]}).to_csv(
        root / "classes.csv", index=False)
    return root


def test_training_split_missing_or_empty_class_is_an_error(tmp_path):
    root = _small_tree(tmp_path / "t")
    pd.DataFrame({"id": ["k0", "k1", "k9"], "name": ["a", "b", "z"]}).to_csv(root / "c3.csv", index=False)
    ds = _dataset(root, root, root, classes_csv=str(root / "c3.csv"))
    with pytest.raises(FileNotFoundError, match="no folder for class 'k9'"):
        prepare_imagefolder(tmp_path / "o1", ds, [{"name": "test"}], 10, 0, **prepared_paths(tmp_path / "o1"))
    (root / "k9").mkdir()
    with pytest.raises(FileNotFoundError, match="empty folder for class 'k9'"):
        prepare_imagefolder(tmp_path / "o2", ds, [{"name": "test"}], 10, 0, **prepared_paths(tmp_path / "o2"))
    # an eval set may lack the class: it is scanned and reported, not an error
    files = scan_imagefolder(root, ["k0", "k1", "k9"], allow_empty=True)
    assert files.empty_classes == ["k9"] and len(files.files) == 6


@pytest.mark.parametrize("fmt,ext,tol", [("png", "png", 0), ("jpeg", "jpg", 12), ("webp", "webp", 12)])
def test_encodings_round_trip_at_the_storage_size(tmp_path, fmt, ext, tol):
    root = _small_tree(tmp_path / "t")
    ds = _dataset(root, root, root, image_size=8, storage_size=12, center_crop=False,
                  encoding={"format": fmt, "quality": 90})
    m = prepare_imagefolder(tmp_path / "o", ds, [{"name": "test"}], 4, 0, **prepared_paths(tmp_path / "o"))
    shard = tmp_path / "o" / m["splits"]["train"]["shards"][0]
    with tarfile.open(shard) as tar:
        names = tar.getnames()
        first = tar.extractfile(f"00000000.{ext}").read()
    assert f"00000000.{ext}" in names and len(m["splits"]["train"]["shards"]) == 2
    got = np.asarray(Image.open(io.BytesIO(first)).convert("RGB"))
    assert got.shape == (12, 16, 3)  # shorter side 12, aspect kept (24x32 -> 12x16)
    rec = json.loads(tarfile.open(shard).extractfile("00000000.json").read())
    with Image.open(root / rec["file"]) as im:
        ref = np.asarray(im.convert("RGB").resize((16, 12), Image.BICUBIC)).astype(int)
    assert np.abs(got.astype(int) - ref).mean() <= tol + 1e-9


def test_interleave_good_fills_holes_from_the_same_class():
    # classes 0,1,2 interleaved; class 1's second file is bad, class 2 has one file only
    stream = [(0, "a0"), (1, "b0"), (2, "c0"), (0, "a1"), (1, None), (0, "a2"), (1, "b2"), (0, "a3")]
    got = list(_interleave_good(iter(stream), np.array([4, 3, 1])))
    assert got == [(0, "a0"), (1, "b0"), (2, "c0"), (0, "a1"), (1, "b2"), (0, "a2"), (0, "a3")]


# --- class tables from WordNet ids ---

WNIDS = {  # ImageNet wnid: (name, a word of the gloss, hypernym); gloss and hypernym from WordNet 3.0,
    # the name from OpenAI's curated ImageNet names (not the first WordNet lemma, given in comments)
    "n01440764": ("tench", "freshwater", "cyprinid"),
    "n02102040": ("English Springer Spaniel", "black-and-white", "springer spaniel"),  # English springer
    "n02123045": ("tabby cat", "mottled", "domestic cat"),  # tabby
    "n09246464": ("cliff", "steep", "geological formation"),
    "n03000134": ("chain-link fence", "diamond", "fence"),  # chainlink fence
}


def test_class_table_from_wordnet_ids(tmp_path):
    if not any((d / "data.noun").is_file() for d in wordnet.candidate_dirs()):
        require_or_skip("wordnet", "WordNet 3.0 data not installed (apt-get install wordnet-base)")
    pd.DataFrame({"id": list(WNIDS)}).to_csv(tmp_path / "c.csv", index=False)
    df = read_classes_table(tmp_path / "c.csv")
    assert df["index"].tolist() == list(range(len(WNIDS)))
    for _, row in df.iterrows():
        name, gloss_word, hyper = WNIDS[row["id"]]
        assert row["name"] == name and gloss_word in row["description"] and row["hypernym"] == hyper
    # given columns win over WordNet
    pd.DataFrame({"id": ["n01440764"], "name": ["my tench"]}).to_csv(tmp_path / "d.csv", index=False)
    row = read_classes_table(tmp_path / "d.csv").iloc[0]
    assert row["name"] == "my tench" and row["hypernym"] == "cyprinid"
    with pytest.raises(KeyError, match="n00000001"):
        wordnet.synset("n00000001")


def test_imagenet1k_ids_take_open_clips_curated_names():
    """ImageNet-1k's 1000 wnids (sorted) map, in order, onto open_clip's IMAGENET_CLASSNAMES: 1000
    distinct names, the two crane and the two maillot synsets told apart."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = wordnet.imagenet1k_names()
    wnids = list(names)
    assert len(wnids) == 1000 and wnids == sorted(wnids) and wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    assert len(set(names.values())) == 1000
    fixed = set(wordnet.IMAGENET_NAME_FIXES)
    assert [n for w, n in names.items() if w not in fixed] == [
        n for w, n in zip(wnids, IMAGENET_CLASSNAMES) if w not in fixed]
    # WordNet's first lemmas: crane (a machine, a bird), maillot (tights, a swimsuit)
    assert (names["n03126707"], names["n02012849"]) == ("construction crane", "crane bird")
    assert (names["n03710637"], names["n03710721"]) == ("tights", "one-piece bathing suit")
    # open_clip names both "missile"; timm's synsets: n04008634 "projectile, missile", n03773504 "missile"
    assert names["n04008634"] == "projectile" and names["n03773504"] == "missile"


def test_class_table_names_imagenet1k_ids_by_open_clip_and_others_by_wordnet(tmp_path):
    if not any((d / "data.noun").is_file() for d in wordnet.candidate_dirs()):
        require_or_skip("wordnet", "WordNet 3.0 data not installed (apt-get install wordnet-base)")
    pd.DataFrame({"id": ["n03126707", "n02012849"]}).to_csv(tmp_path / "in1k.csv", index=False)
    assert read_classes_table(tmp_path / "in1k.csv")["name"].tolist() == ["construction crane", "crane bird"]
    # n02084071 (dog) is no ImageNet-1k class: the table is not ImageNet-1k's, names are WordNet's
    # first lemmas, and the two cranes collide: an error that names them
    pd.DataFrame({"id": ["n03126707", "n02012849", "n02084071"]}).to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(ValueError, match=r"share a name.*'crane': \['n03126707', 'n02012849'\]"):
        read_classes_table(tmp_path / "mixed.csv")
    # disambiguated in the table's own `name` column, it reads
    pd.DataFrame({"id": ["n03126707", "n02012849", "n02084071"], "name": ["crane (machine)", "crane (bird)", ""]}
                 ).to_csv(tmp_path / "named.csv", index=False)
    assert read_classes_table(tmp_path / "named.csv")["name"].tolist() == ["crane (machine)", "crane (bird)", "dog"]


def test_duplicate_class_names_are_a_config_error(folder, tmp_path):
    pd.DataFrame({"id": IDS, "name": ["cat", "dog", "cat"] + [f"k{i}" for i in range(len(IDS) - 3)]}
                 ).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ConfigError, match=r"config key dataset\.classes_csv: .*'cat': \['c00', 'c02'\]"):
        check_config(_config(folder, classes_csv=str(tmp_path / "dup.csv")))


def test_missing_wordnet_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(wordnet, "candidate_dirs", lambda: [tmp_path])
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        wordnet.find_wordnet()


def test_class_table_without_names_needs_wordnet_ids(tmp_path):
    pd.DataFrame({"id": ["cat", "dog"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ValueError, match="name"):
        read_classes_table(tmp_path / "c.csv")


# --- config checks ---

def _config(folder, **ds_over):
    cfg = yaml.safe_load(Path("configs/test.yaml").read_text())
    cfg["dataset"] = {"name": "toy", "kind": "imagefolder", "image_size": 12, "train_dir": str(folder / "train"),
                      "test_dir": str(folder / "val"), "classes_csv": str(folder / "classes.csv"), **ds_over}
    cfg["eval_sets"] = [{"name": "test"}, {"name": "sub", "root": str(folder / "sub"), "classes": SUBSET}]
    return cfg


def test_config_fills_storage_defaults_and_checks_eval_classes(folder, tmp_path):
    cfg = check_config(_config(folder))
    ds = cfg["dataset"]
    assert ds["storage_size"] is None and ds["center_crop"] is True and ds["encoding"]["format"] == "png"
    assert 0 < ds["max_bad_fraction"] < 1 and "prepare" in cfg["resources"]
    bad = _config(folder)
    bad["eval_sets"][1]["classes"] = ["c00", "zz"]
    with pytest.raises(ConfigError, match=r"config key eval_sets\.sub\.classes: .*'zz'"):
        check_config(bad)
    pd.DataFrame({"id": ["cat"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ConfigError, match=r"config key dataset\.classes_csv"):
        check_config(_config(folder, classes_csv=str(tmp_path / "c.csv")))
    with pytest.raises(ConfigError, match=r"config key dataset\.encoding\.format"):
        check_config(_config(folder, encoding={"format": "gif"}))


def test_eval_classes_from_folders_takes_the_class_folders_present(folder):
    """`classes: folders` (ImageNet-R/-A style): the ids with a sub-folder under the set's root."""
    from synthscale.data.real import class_subset

    ev = {"name": "sub", "root": str(folder / "sub"), "classes": "folders"}
    assert class_subset(ev, IDS, folder / "sub") == list(range(5)), "the empty folder counts: it is reported"
    with pytest.raises(ValueError, match="needs its image folder"):
        class_subset(ev, IDS, folder / "nowhere")
    with pytest.raises(ValueError, match="no class folder"):
        class_subset(ev, ["x", "y"], folder / "sub")
    cfg = _config(folder)
    cfg["eval_sets"] = [{"name": "sub", "root": str(folder / "sub"), "classes": "folders"}]
    assert check_config(cfg)["eval_sets"][0]["classes"] == "folders"
    digits = {"dataset": {"name": "d", "kind": "digits"}, "eval_sets": [{"name": "t", "classes": "folders"}],
              "generators": [{"name": "g", "kind": "trained"}], "guidance": [1.0], "strategies": ["classname"],
              "n_images": [10]}
    with pytest.raises(ConfigError, match="config key eval_sets.t.classes"):
        check_config(digits)
