"""A study may give generator training more than one thread (`resources.train_generator.threads`):
the weights must then depend on the pinned thread count alone, not on the CPUs the job may run on (a
SLURM cgroup, taskset) or the OMP_NUM_THREADS it inherited. (Warm against cold starts: the workflow
tests compare the two runs' generators.)"""
import json
import os
import subprocess
import sys

import pytest
import yaml

from helpers import REPO

TRAIN = r"""
import hashlib, json, os, sys
import numpy as np
cpus = json.loads(sys.argv[1])
if cpus:
    os.sched_setaffinity(0, cpus)
from synthscale.runtime import pin_threads
pin_threads(int(sys.argv[2]))
import torch
from synthscale.generation.tinygen import train_tiny_generator
spec = json.loads(sys.argv[3])
rng = np.random.default_rng(0)
images = (rng.random((100, 16, 16, 1)) * 255).astype(np.uint8)
train_tiny_generator(images, lambda r, i: f"a photo of the digit {i % 10}", spec["arch"],
                     dict(spec["recipe"], steps=15), 0, sys.argv[4], progress=False)
weights = open(os.path.join(sys.argv[4], "unet", "diffusion_pytorch_model.safetensors"), "rb").read()
print(json.dumps({"sha": hashlib.sha256(weights).hexdigest(), "threads": torch.get_num_threads(),
                  "cpus": sorted(os.sched_getaffinity(0))}))
"""


def train(tmp_path, name, threads, cpus=(), env=None):
    spec = next(g for g in yaml.safe_load((REPO / "config.yaml").read_text())["generators"]
                if g["kind"] == "trained")
    out = subprocess.run(
        [sys.executable, "-c", TRAIN, json.dumps(list(cpus)), str(threads), json.dumps(spec), str(tmp_path / name)],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_two_thread_generator_weights_depend_only_on_the_thread_count(tmp_path):
    plain = train(tmp_path, "plain", 2)
    one_cpu = train(tmp_path, "one-cpu", 2, cpus=[min(os.sched_getaffinity(0))])
    other_env = train(tmp_path, "env", 2, env={"OMP_NUM_THREADS": "7", "MKL_NUM_THREADS": "7"})
    assert plain["threads"] == one_cpu["threads"] == other_env["threads"] == 2
    assert len(one_cpu["cpus"]) == 1
    assert plain["sha"] == one_cpu["sha"] == other_env["sha"]
