"""Prompt strategies and real-data preparation."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.data import prepared_paths
from synthscale.data.real import (
    CLASS_COLUMNS,
    class_names,
    digits_classes,
    interleave_by_class,
    prepare_digits,
    read_classes,
    split_shards,
    thicken,
    write_prepared,
)
from synthscale.data.prepare import prepare_dataset
from synthscale.data.imagefolder import prepare_imagefolder
from synthscale.prompts.strategies import class_prompts, read_prompts, write_prompts
from synthscale.data.shards import load_arrays


def test_strategies_build_prompts_with_the_class_name():
    classes = digits_classes()
    for strategy in ("classname", "description", "hypernym", "templates"):
        prompts = class_prompts(classes, strategy)
        assert len(prompts) == 10
        assert all("seven" in p for p in prompts[7])
    assert len(class_prompts(classes, "templates")[0]) == 80
    assert class_prompts(classes, "hypernym")[3] == ["three, digit"]
    with pytest.raises(ValueError, match="unknown prompt strategy"):
        class_prompts(classes, "word2sen_typo")


def test_prompt_file_round_trip(tmp_path):
    write_prompts(tmp_path / "p.jsonl", digits_classes(), "description")
    assert read_prompts(tmp_path / "p.jsonl") == class_prompts(digits_classes(), "description")
    first = json.loads((tmp_path / "p.jsonl").read_text().splitlines()[0])
    assert first["name"] == "zero" and first["strategy"] == "description"


def test_interleave_makes_prefixes_balanced():
    labels = np.repeat(np.arange(4), [5, 7, 6, 9])
    order = interleave_by_class(labels, 0)
    assert sorted(order.tolist()) == list(range(len(labels)))
    assert labels[order[:20]].tolist() == [0, 1, 2, 3] * 5


def test_thicken_grows_strokes():
    im = np.zeros((1, 9, 9, 1), np.uint8)
    im[0, 4, 4, 0] = 255
    assert (thicken(im, 3) > 0).sum() == 9


def test_prepare_digits_writes_balanced_splits(tmp_path):
    evs = [{"name": "test"}, {"name": "rot", "ood": True, "shift": {"kind": "rotate", "degrees": 30}}]
    m = prepare_digits(tmp_path, 16, 0.33, evs, 500, 0, **prepared_paths(tmp_path))
    assert m["splits"]["train"]["count"] + m["splits"]["test"]["count"] == 1797
    x, y, _ = load_arrays(split_shards(tmp_path / "splits.json", "train"), mode="L", limit=30)
    assert x.shape == (30, 16, 16, 1)
    assert np.bincount(y).tolist() == [3] * 10
    t, _, _ = load_arrays(split_shards(tmp_path / "splits.json", "test"), mode="L")
    r, _, _ = load_arrays(split_shards(tmp_path / "splits.json", "rot"), mode="L")
    assert t.shape == r.shape and not np.array_equal(t, r)


def test_prepare_digits_eval_set_class_subset(tmp_path):
    evs = [{"name": "test"}, {"name": "sub", "classes": ["3", 7]}]
    m = prepare_digits(tmp_path, 8, 0.33, evs, 500, 0, **prepared_paths(tmp_path))
    sub, test = m["splits"]["sub"], m["splits"]["test"]
    assert sub["classes"] == [3, 7] and "classes" not in test
    assert sub["count"] == test["per_class"][3] + test["per_class"][7]
    _, y, _ = load_arrays(split_shards(tmp_path / "splits.json", "sub"), mode="L")
    assert set(y.tolist()) == {3, 7}


def test_prepared_data_goes_where_the_rule_says(tmp_path):
    """The class table and manifest land at the rule's outputs (Plan.classes, Plan.manifest), not at
    names of prepare_digits' own; the manifest must lie beside its shards, which it lists relatively."""
    out = tmp_path / "d"
    m = prepare_digits(out, 8, 0.33, [{"name": "test"}], 500, 0,
                       manifest_path=out / "m.json", classes_path=tmp_path / "table.csv")
    assert not (out / "splits.json").exists() and not (out / "classes.csv").exists()
    assert json.loads((out / "m.json").read_text()) == m
    assert len(split_shards(out / "m.json", "train")) == 3
    assert pd.read_csv(tmp_path / "table.csv")["id"].astype(str).tolist() == [str(i) for i in range(10)]
    with pytest.raises(ValueError, match="must lie in"):
        prepare_digits(out, 8, 0.33, [{"name": "test"}], 500, 0, manifest_path=tmp_path / "elsewhere.json",
                       classes_path=out / "classes.csv")


def test_a_prepared_class_table_reads_back_as_written_in_class_order(tmp_path):
    """read_classes, the one reader of a prepared classes.csv: ids that look like numbers ("007") and
    names pandas would take for missing values ("NA", "null") come back as the text written, an empty
    hypernym as "", and rows in class-index order whatever the file's order."""
    table = pd.DataFrame({"index": [0, 1, 2], "id": ["007", "n01", "3"], "name": ["NA", "null", "three"],
                          "description": ["", "a fish", "a digit"], "hypernym": ["", "fish", "None"]})
    write_prepared(tmp_path, table.iloc[[2, 0, 1]], {"classes": 3, "splits": {}}, **prepared_paths(tmp_path))
    back = read_classes(tmp_path / "classes.csv")
    assert list(back.columns) == CLASS_COLUMNS and back.index.tolist() == [0, 1, 2]
    pd.testing.assert_frame_equal(back, table)
    assert class_names(tmp_path / "classes.csv") == ["NA", "null", "three"]
    # what every prompt strategy makes of it is what it makes of the table itself
    for strategy in ("classname", "description", "hypernym"):
        assert class_prompts(back, strategy) == class_prompts(table, strategy)


def test_prepared_digits_prompts_are_the_digits_tables(tmp_path):
    """A prompts job reads the prepared table (read_classes): its prompt file equals the one written
    straight from the digits table, and the class names are the digits' in index order."""
    prepare_digits(tmp_path, 8, 0.33, [{"name": "test"}], 500, 0, **prepared_paths(tmp_path))
    for strategy in ("classname", "description", "hypernym"):
        write_prompts(tmp_path / "a.jsonl", read_classes(tmp_path / "classes.csv"), strategy)
        write_prompts(tmp_path / "b.jsonl", digits_classes(), strategy)
        assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert class_names(tmp_path / "classes.csv") == digits_classes()["name"].tolist()


def test_the_dataset_kind_picks_the_preparation_and_the_manifest_folder_holds_the_shards(tmp_path):
    """prepare_dataset (rule prepare_data): digits through prepare_digits, an ImageFolder tree through
    prepare_imagefolder, each writing its shards beside the rule's manifest and its class table where
    the rule says."""
    evs = [{"name": "test"}]
    digits = {"kind": "digits", "image_size": 8, "test_fraction": 0.33, "shard_size": 500,
              "encoding": {"format": "png", "quality": 95}}
    m = prepare_dataset(digits, evs, 0, tmp_path / "d/splits.json", tmp_path / "d/classes.csv")
    assert m == prepare_digits(tmp_path / "ref", 8, 0.33, evs, 500, 0, **prepared_paths(tmp_path / "ref"))
    assert len(split_shards(tmp_path / "d/splits.json", "train")) == 3
    assert read_classes(tmp_path / "d/classes.csv").equals(read_classes(tmp_path / "ref/classes.csv"))
    _image_tree(tmp_path, 2, (20, 20))
    folder = {"kind": "imagefolder", "image_size": 8, "channels": 3, "train_dir": str(tmp_path / "train"),
              "test_dir": str(tmp_path / "val"), "classes_csv": str(tmp_path / "c.csv"), "shard_size": 100,
              "storage_size": None, "center_crop": True, "encoding": {"format": "png", "quality": 95},
              "max_bad_fraction": 0.0}
    m = prepare_dataset(folder, evs, 0, tmp_path / "f/m.json", tmp_path / "table.csv")
    assert m["splits"]["train"]["per_class"] == [2, 2]
    assert split_shards(tmp_path / "f/m.json", "train")[0].parent == tmp_path / "f/train"
    assert class_names(tmp_path / "table.csv") == ["tench", "goldfish"]


def _image_tree(root, n_train, size):
    """train/ and val/ ImageFolder trees of classes n01 and n02 (n_train and n_train / 2 images each)
    under `root`, and their class table c.csv."""
    for split, n in (("train", n_train), ("val", n_train // 2)):
        for cid in ("n01", "n02"):
            (root / split / cid).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", size, (i * 40, 10, 200)).save(root / split / cid / f"{i}.jpg")
    pd.DataFrame({"id": ["n01", "n02"], "name": ["tench", "goldfish"]}).to_csv(root / "c.csv", index=False)


def test_prepare_imagefolder(tmp_path):
    _image_tree(tmp_path, 4, (40, 30))
    ds = {"image_size": 16, "channels": 3, "train_dir": str(tmp_path / "train"),
          "test_dir": str(tmp_path / "val"), "classes_csv": str(tmp_path / "c.csv"),
          "storage_size": None, "center_crop": True, "encoding": {"format": "png", "quality": 95},
          "max_bad_fraction": 0.0}
    m = prepare_imagefolder(tmp_path / "out", ds, [{"name": "test"}], 100, 0, **prepared_paths(tmp_path / "out"))
    assert m["splits"]["train"]["per_class"] == [4, 4] and m["splits"]["test"]["count"] == 4
    x, y, _ = load_arrays(split_shards(tmp_path / "out/splits.json", "train"))
    assert x.shape == (8, 16, 16, 3) and y[:4].tolist() == [0, 1, 0, 1]
    classes = pd.read_csv(tmp_path / "out/classes.csv", keep_default_na=False)
    assert classes["name"].tolist() == ["tench", "goldfish"] and classes["hypernym"].tolist() == ["", ""]
    with pytest.raises(FileNotFoundError, match="no folder for class"):
        prepare_imagefolder(tmp_path / "o2", {**ds, "train_dir": str(tmp_path)}, [{"name": "test"}], 100, 0,
                            **prepared_paths(tmp_path / "o2"))


def test_templates_are_open_clips_own_and_writing_them_imports_no_torch(tmp_path):
    """The templates prompts job is one of the first every job waits for: it reads open_clip's
    templates without importing open_clip (and so torch), and gets the very same prompts."""
    import subprocess
    import sys

    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    assert class_prompts(digits_classes(), "templates")[7] == [t("seven") for t in OPENAI_IMAGENET_TEMPLATES]
    code = ("import sys\nfrom synthscale.data.real import digits_classes\n"
            "from synthscale.prompts.strategies import write_prompts\n"
            f"write_prompts({str(tmp_path / 't.jsonl')!r}, digits_classes(), 'templates')\n"
            "print(sorted(m for m in ('torch', 'open_clip') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert read_prompts(tmp_path / "t.jsonl") == class_prompts(digits_classes(), "templates")


def test_templates_fall_back_to_importing_open_clip_when_its_file_cannot_run_alone(monkeypatch):
    from synthscale.data import wordnet
    from synthscale.prompts import strategies

    def gone(name):
        raise ModuleNotFoundError(name)

    import sys

    monkeypatch.setattr(wordnet, "package_dir", gone)
    monkeypatch.delitem(sys.modules, "open_clip.zero_shot_metadata", raising=False)
    strategies.openai_imagenet_templates.cache_clear()
    try:
        assert len(class_prompts(digits_classes(), "templates")[0]) == 80
        assert "open_clip.zero_shot_metadata" in sys.modules, "the templates did not come from the import"
    finally:
        strategies.openai_imagenet_templates.cache_clear()
