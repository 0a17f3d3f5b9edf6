"""benchmarks/bench_default.py's run analysis on fake job graphs: the critical path, the dependency edges
and the reading of Snakemake's per-file metadata (the study itself is never run here)."""

import base64
import importlib.util
import itertools
import json
import random
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO

_spec = importlib.util.spec_from_file_location(
    "bench_default", REPO / "benchmarks" / "bench_default.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_critical_path_of_a_diamond_takes_the_longer_branch():
    durations = {"a": 2.0, "b": 5.0, "c": 1.0, "d": 3.0, "lone": 9.0}
    deps = {"b": {"a"}, "c": {"a"}, "d": {"b", "c"}}
    assert bench.critical_path(durations, deps) == (10.0, ["a", "b", "d"])
    # one long independent job beats the chain
    assert bench.critical_path(dict(durations, lone=11.0), deps) == (11.0, ["lone"])


def test_chain_waits_are_the_queueing_after_the_latest_input():
    """A job that starts when its latest input is done waited 0; one that waited for cores shows it."""
    jobs = {"a": {"start": 100.0, "end": 102.0}, "b": {"start": 102.0, "end": 107.0},
            "c": {"start": 103.0, "end": 104.0}, "d": {"start": 120.0, "end": 123.0},
            "e": {"start": 101.0, "end": 130.0}}
    deps = {"b": {"a"}, "c": {"a"}, "d": {"b", "c"}}
    assert bench.chain_waits(jobs, ["a", "b", "d"], deps) == [0.0, 0.0, 13.0]
    assert bench.chain_waits(jobs, ["e"], deps) == [1.0]  # no inputs: from the run's first start


def _all_chains(nodes, deps):
    """Every chain of dependent jobs, by brute force (the independent answer)."""
    def chains_ending(j):
        before = list(deps.get(j, ()))
        if not before:
            return [[j]]
        return [c + [j] for d in before for c in chains_ending(d)]
    return [c for j in nodes for c in chains_ending(j)]


@pytest.mark.parametrize("seed", range(20))
def test_critical_path_matches_brute_force_on_random_dags(seed):
    rng = random.Random(seed)
    nodes = [f"j{i}" for i in range(rng.randint(1, 9))]
    durations = {j: float(rng.randint(1, 20)) for j in nodes}
    # edges only from earlier to later nodes: a DAG
    deps = {j: {nodes[k] for k in range(i) if rng.random() < 0.4} for i, j in enumerate(nodes)}
    length, chain = bench.critical_path(durations, deps)
    best = max(sum(durations[j] for j in c) for c in _all_chains(nodes, deps))
    assert length == best
    assert sum(durations[j] for j in chain) == length
    for before, after in itertools.pairwise(chain):  # a real chain: each job waits for the one before
        assert before in deps[after]


def test_critical_path_refuses_a_cycle():
    with pytest.raises(ValueError, match="cycle"):
        bench.critical_path({"a": 1.0, "b": 1.0}, {"a": {"b"}, "b": {"a"}})


def _record(meta: Path, out: str, rec: dict, name_max: int = 255) -> None:
    """A metadata record as Snakemake writes it: urlsafe base64 of the path, split into "@" folders."""
    b64 = base64.urlsafe_b64encode(out.encode()).decode()
    pieces = [b64[i:i + name_max - 1] for i in range(0, len(b64), name_max - 1)]
    path = meta.joinpath(*(["@" + p for p in pieces[:-1]] + [pieces[-1]]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))


def test_read_jobs_and_dependencies_from_metadata(tmp_path):
    meta, res = tmp_path / "metadata", tmp_path / "results"
    gen_dir = f"{res}/generators/tiny"
    long_name = f"{res}/synthetic/" + "x" * 300 + "/shard-000000.tar"
    _record(meta, f"{res}/data/splits.json",
            {"rule": "prepare_data", "input": [], "job_hash": 1, "starttime": 0.0, "endtime": 4.0})
    _record(meta, f"{res}/data/classes.csv",
            {"rule": "prepare_data", "input": [], "job_hash": 1, "starttime": 0.0, "endtime": 4.0})
    _record(meta, gen_dir, {"rule": "train_generator", "input": [f"{res}/data/splits.json"], "job_hash": 2,
                            "starttime": 4.0, "endtime": 100.0})
    # reads a file inside the generator's directory output; its name is long enough to be split
    _record(meta, long_name, {"rule": "generate_block", "input": [f"{gen_dir}/model_index.json"],
                              "job_hash": 3, "starttime": 100.0, "endtime": 130.0}, name_max=64)
    _record(meta, f"{res}/train/m.safetensors", {"rule": "train_classifier", "job_hash": 4,
                                                 "input": [f"{res}/data/splits.json"],
                                                 "starttime": 4.0, "endtime": 30.0})
    # another results folder and an unfinished job are not this run's
    _record(meta, f"{tmp_path}/other/x.csv", {"rule": "prepare_data", "input": [], "job_hash": 9,
                                              "starttime": 0.0, "endtime": 999.0})
    _record(meta, f"{res}/half.csv", {"rule": "quality", "input": [], "job_hash": 8, "incomplete": True,
                                      "starttime": 0.0, "endtime": 999.0})
    jobs = bench.read_jobs(meta, res)
    assert sorted(j["rule"] for j in jobs.values()) == ["generate_block", "prepare_data", "train_classifier",
                                                         "train_generator"]
    key = {j["rule"]: k for k, j in jobs.items()}
    assert len(jobs[key["prepare_data"]]["outputs"]) == 2
    assert long_name in jobs[key["generate_block"]]["outputs"]
    deps = bench.dependencies(jobs)
    assert deps[key["generate_block"]] == {key["train_generator"]}
    assert deps[key["train_generator"]] == {key["prepare_data"]}
    length, chain = bench.critical_path({k: j["end"] - j["start"] for k, j in jobs.items()}, deps)
    assert length == 130.0
    assert [jobs[k]["rule"] for k in chain] == ["prepare_data", "train_generator", "generate_block"]


def test_rule_table_sums_per_rule_slowest_first():
    bench_rows = pd.DataFrame({"rule": ["a", "b", "a", "c"], "s": [1.0, 5.0, 3.0, 0.5],
                               "cpu_time": [0.5, 4.0, 2.0, 0.1]})
    rows = bench.rule_table(bench_rows)
    assert [r["rule"] for r in rows] == ["b", "a", "c"]
    assert rows[1] == {"rule": "a", "wall_s": 4.0, "cpu_s": 2.5, "jobs": 2}
