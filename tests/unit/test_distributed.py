"""synthscale.distributed on its own: where it sits in the package, and each rank's seeds."""
import ast
from pathlib import Path

import synthscale.distributed as distributed
from synthscale.distributed import rank_seed
from synthscale.seeds import mix_seed


def _synthscale_imports(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith("synthscale")}


def test_distributed_imports_no_stage_module():
    """A cross-cutting module imports only other top-level ones (preemption, seeds, io), never a
    stage's subpackage (rank_seed used to reach into data.loader for its seed mixer)."""
    stage = {n for n in _synthscale_imports(distributed) if n.count(".") > 1}
    assert not stage, f"synthscale.distributed imports stage modules {stage}"


def test_rank_seeds_and_the_mixer_are_unchanged():
    """Values from before mix_seed moved to synthscale.seeds: every seed a run draws stays the same."""
    assert [rank_seed(5, 0, 61), rank_seed(5, 1, 61), rank_seed(123456789, 7, 67)] == [5, 1229786620, 52945748]
    assert mix_seed(3, 4, 5, 53) == 8358733167810093914


def test_torchrun_gives_signalled_ranks_the_grace_period_we_set(monkeypatch):
    """torchrun SIGKILLs its ranks 30 s after passing on a SIGTERM unless told otherwise; a large
    checkpoint needs longer. The launch environment sets the variable torch's launcher reads."""
    from torch.distributed.launcher.api import LaunchConfig

    from synthscale.distributed import SHUTDOWN_TIMEOUT_S, rank_env

    monkeypatch.delenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", raising=False)
    env = rank_env(3)
    assert env["OMP_NUM_THREADS"] == "3"
    monkeypatch.setenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"])
    assert LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2).shutdown_timeout == SHUTDOWN_TIMEOUT_S > 30
    monkeypatch.setenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "600")  # a site's own setting wins
    assert rank_env(3)["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "600"


def test_a_training_job_runs_here_on_one_gpu_and_under_torchrun_on_several(tmp_path):
    """run_training (scripts train_classifier and finetune_generator): one device trains in the job's
    process with the spec as given; several GPUs go through the module's run_distributed with the job's
    threads added to the spec (run_torchrun shares them among the ranks)."""
    calls = []
    train = lambda **spec: calls.append(("here", spec))  # noqa: E731
    ddp = lambda spec, nproc, path: calls.append(("torchrun", spec, nproc, path))  # noqa: E731
    spec = {"seed": 3, "device": "cuda"}
    for gpus in (0, 1):
        distributed.run_training(train, ddp, spec, gpus, 16, tmp_path / "spec.json")
    distributed.run_training(train, ddp, spec, 4, 16, tmp_path / "spec.json")
    assert calls == [("here", spec), ("here", spec),
                     ("torchrun", {**spec, "threads": 16}, 4, tmp_path / "spec.json")]
