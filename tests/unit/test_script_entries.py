"""The one call each training, generator, prompt and sample-grid script makes (issue 17: scripts only
adapt): each entry does what the script's old sequence of calls did, and a training entry hands
run_training the same JSON spec."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.data import prepared_paths
from synthscale.data.real import digits_classes, prepare_digits, read_classes, split_shards
from synthscale.prompts.strategies import read_prompts, write_prompts


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    prepare_digits(out, 16, 0.33, [{"name": "test"}], 1000, 0, **prepared_paths(out))
    return out


def _prompt_files(folder, strategies=("classname", "templates")):
    files = []
    for s in strategies:
        files.append(folder / f"{s}.jsonl")
        write_prompts(files[-1], read_classes(folder / "classes.csv"), s)
    return files


def test_train_run_hands_run_training_the_scripts_spec(digits, tmp_path, monkeypatch):
    import synthscale.classifier.train as T

    seen = []
    monkeypatch.setattr(T, "run_training", lambda *a: seen.append(a))
    plan_parts = [{"split": "train", "limit": 50}]
    T.train_run(plan_parts, digits / "splits.json", {"epochs": 1}, 3, "m.pt", "log.csv", "ck.pt", "cpu", {"w": 1},
                2, 8, "spec.json")
    parts, n_classes = T.training_parts(plan_parts, digits / "splits.json")
    want = dict(parts=parts, n_classes=n_classes, recipe={"epochs": 1}, seed=3, model_path="m.pt",
                log_path="log.csv", checkpoint_path="ck.pt", device="cpu", mix=T.run_mix(parts, {"w": 1}))
    assert seen == [(T.train_model, T.run_distributed, want, 2, 8, "spec.json")]
    assert list(seen[0][2]) == list(want) and json.loads(json.dumps(seen[0][2])) == want


def test_finetune_run_hands_run_training_the_scripts_spec(digits, tmp_path, monkeypatch):
    import synthscale.generation.finetune as FT

    seen = []
    monkeypatch.setattr(FT, "run_training", lambda *a: seen.append(a))
    files = _prompt_files(digits)
    gen = {"name": "ft", "base": "tiny", "finetune": {"steps": 2}}
    FT.finetune_run("/base", digits / "splits.json", files, gen, 5, "out", "ck.pt", "cpu", 1, 4, "spec.json")
    want = dict(base="/base", shards=[str(s) for s in split_shards(digits / "splits.json", "train")],
                class_prompts=[read_prompts(f) for f in files], recipe={"steps": 2}, seed=5, out_dir="out",
                checkpoint_path="ck.pt", device="cpu", provenance=FT.generator_provenance(gen))
    assert seen == [(FT.finetune_generator, FT.run_distributed, want, 1, 4, "spec.json")]
    assert list(seen[0][2]) == list(want) and json.loads(json.dumps(seen[0][2])) == want


def test_train_generator_on_split_trains_on_what_the_script_read(digits, monkeypatch):
    import synthscale.generation.tinygen as TG

    files = _prompt_files(digits)
    spec = {"arch": {"a": 1}, "recipe": {"steps": 1}, "train_shift": {"kind": "none"}}
    got = {}
    monkeypatch.setattr(TG, "generator_training_set", lambda *a: got.setdefault("set", a) and ("imgs", "caps"))
    monkeypatch.setattr(TG, "train_tiny_generator", lambda *a: got.setdefault("train", a) and [])
    TG.train_generator_on_split(digits / "splits.json", 1, files, spec, 7, "out")
    assert got["set"] == (split_shards(digits / "splits.json", "train"), "L", [read_prompts(f) for f in files],
                          {"steps": 1}, 7, {"kind": "none"})
    assert got["train"] == ("imgs", "caps", {"a": 1}, {"steps": 1}, 7, "out")


def test_write_sample_grid_draws_what_the_old_calls_drew(digits, tmp_path):
    from synthscale.analysis.quality_report import plot_sample_grid, write_sample_grid
    from synthscale.data.real import class_names
    from synthscale.data.shards import load_arrays

    shard = split_shards(digits / "splits.json", "train")[0]
    write_sample_grid(shard, digits / "classes.csv", "gen", "2", "classname", tmp_path / "new.png")
    images, labels, _ = load_arrays([shard], mode="RGB")
    plot_sample_grid(images, labels, class_names(digits / "classes.csv"),
                     "gen, guidance 2, prompts: classname (first shard)", tmp_path / "old.png")
    assert (tmp_path / "new.png").read_bytes() == (tmp_path / "old.png").read_bytes()


def test_prompt_entries_write_and_report_as_the_script_did(digits, tmp_path, monkeypatch, capsys):
    import synthscale.prompts.models as PM
    from synthscale.prompts.strategies import write_strategy_prompts

    write_strategy_prompts(tmp_path / "new.jsonl", digits / "classes.csv", "templates")
    write_prompts(tmp_path / "old.jsonl", digits_classes(), "templates")
    assert (tmp_path / "new.jsonl").read_bytes() == (tmp_path / "old.jsonl").read_bytes()
    calls = []
    monkeypatch.setattr(PM, "make_model_prompts", lambda *a: calls.append(a) or ["one line", "two"])
    PM.model_prompts_job("out.jsonl", "llm", {"kind": "x"}, digits / "classes.csv", "m.json", "cpu")
    assert calls[0][:3] == ("out.jsonl", "llm", {"kind": "x"}) and calls[0][4:] == ("m.json", "cpu")
    assert calls[0][3].equals(read_classes(digits / "classes.csv"))
    assert capsys.readouterr().err == "one line\ntwo\n"
    assert np.array_equal(calls[0][3]["index"], np.arange(len(calls[0][3])))
