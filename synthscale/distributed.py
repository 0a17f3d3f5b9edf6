"""Multi-process training (DDP): torchrun launches, the process group, and what each rank is given.

A job that asks for several GPUs (`resources.<stage>.gpu` > 1) runs its training on one torchrun
process per GPU. Two sides, one module:
- in the job: `run_torchrun(module, spec, nproc, spec_path)` writes the keyword arguments of the
  training function to a JSON spec, starts `python -m torch.distributed.run --standalone
  --nproc_per_node=N -m MODULE SPEC` (`torchrun_command`) through `launch`, which passes a SIGTERM or
  SIGINT on to torchrun, and turns the ranks' preempted exit into `Preempted`;
- in each rank: the module's `__main__` calls `rank_main(spec_path, train)`, which inits the process
  group (`init_process_group`: "cpu:gloo,cuda:nccl" on CUDA, so CPU control values and device
  tensors each reduce on their own backend), pins the rank's share of the job's threads, calls
  `train(**spec)` and exits `PREEMPTED_EXIT` after a stop that saved a checkpoint.
Inside the loop: `rank_world`, `all_sum` (small control values, on the CPU), `all_sum_device` (a
tensor on the model's device), `barrier` (every rank waits for rank 0's final write), `rank_seed` (a rank's own random draws; rank 0 keeps a one-process
run's) and `rank_threads`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from synthscale.io import ddp_stop_file
from synthscale.preemption import PREEMPTED_EXIT, STOP_SIGNALS, Preempted
from synthscale.seeds import mix_seed

PG_TIMEOUT_MIN = 60  # a collective waits this long for a slow rank (a long first evaluation, a slow file system)
STOP_WAIT_S = 30  # after a signal, how long run_torchrun waits for the ranks' checkpoint (SLURM's KillWait)
# how long torchrun lets its signalled ranks finish their step and save before it SIGKILLs them (its
# default is 30 s, too short for a large checkpoint); the presets signal 180 s before the time limit
# (`slurm_extra: --signal=TERM@180`), so 150 s fits inside with room for the launcher's own exit
SHUTDOWN_TIMEOUT_S = 150


# --------------------------------------------------------------------------------------------------
# inside a rank
# --------------------------------------------------------------------------------------------------


def dist_on() -> bool:
    """Whether a process group is up (torchrun launched this process, at any world size, even 1)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without a process group."""
    if dist_on():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def process_group_backend(device: str) -> str:
    """The torch.distributed backend of a run on `device`. NCCL reduces CUDA tensors only, so on CUDA
    the group pairs NCCL for the device's tensors with gloo for CPU ones ("cpu:gloo,cuda:nccl", the
    device-to-backend form `init_process_group` documents); the loop's control values (stop, epoch
    end, images seen) are then reduced on the CPU without waiting on the GPU. gloo on a CPU run."""
    return "cpu:gloo,cuda:nccl" if torch.device(device).type == "cuda" else "gloo"


def all_sum(values: list[float]) -> list[float]:
    """Sum small control values over the ranks: a CPU tensor (gloo), no GPU synchronisation. Without
    a process group (a plain process) the values are returned as they are; with one, they are reduced
    even at world size 1, so a one-rank torchrun run exercises the collectives."""
    if not dist_on():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return t.tolist()


def all_sum_device(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor that lives on the model's device over the ranks (NCCL on CUDA: float64 is one of
    its types), returning a copy; the caller reads it at a sync point."""
    t = t.clone()
    if dist_on():
        torch.distributed.all_reduce(t)
    return t


def barrier() -> None:
    """Wait until every rank gets here (no-op without a process group). After rank 0's final write,
    so no rank returns (and destroys its process group, or lets the launcher see the job end) while
    that write is under way. On a CUDA run the group's bound device makes it an NCCL barrier on the
    rank's GPU (torch.distributed.barrier's documented device choice); on a CPU run, gloo's."""
    if dist_on():
        torch.distributed.barrier()


def ddp_wrap(model: torch.nn.Module, device: str) -> torch.nn.parallel.DistributedDataParallel:
    """`model` under DDP in this rank's process group (on its GPU on CUDA); rank 0 says so."""
    net = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None
    )
    rank, world = rank_world()
    if rank == 0:
        print(f"DDP: {world} rank(s), process group backend {torch.distributed.get_backend()}", flush=True)
    return net


def rank_seed(base: int, rank: int, salt: int) -> int:
    """The seed of a rank's own random draws from a one-process seed `base`: rank 0 (and so every
    one-process run) keeps `base`; another rank mixes its rank and a per-use `salt` in, so ranks draw
    differently (with one seed for all, every rank would draw the same noise, masks or lambdas)."""
    if rank == 0:
        return base
    return mix_seed(base, rank, salt) % (2**31)


def rank_threads(job_threads: int, nproc: int) -> int:
    """Intra-op threads of each of `nproc` ranks sharing a job's `job_threads` CPU threads (at least
    one): 8 ranks on 64 threads get 8 each, not 64 each."""
    return max(1, int(job_threads) // int(nproc))


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def init_process_group(device: str) -> str:
    """Init this torchrun rank's process group (`process_group_backend`, a `PG_TIMEOUT_MIN` collective
    timeout); a CUDA run takes GPU LOCAL_RANK, to which NCCL is bound at once. Returns the rank's device."""
    kwargs: dict[str, Any] = {"timeout": datetime.timedelta(minutes=PG_TIMEOUT_MIN)}
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
        kwargs["device_id"] = torch.device(device)  # binds NCCL to this rank's GPU at once
    torch.distributed.init_process_group(process_group_backend(device), **kwargs)
    return device


def rank_main(spec_path: str | os.PathLike, train: Callable[..., Any]) -> int:
    """A torchrun rank (or a plain process): init the process group whenever torchrun launched this
    process, at any world size (so one rank still runs DDP and its collectives), pin the threads the
    spec gives, call `train(**spec)` on the rank's device, clean up; return PREEMPTED_EXIT after a
    stop that saved a checkpoint (rank 0 then writes the spec's stop file), else 0."""
    spec = json.loads(Path(spec_path).read_text())
    launched = launched_by_torchrun()
    device = spec.get("device", "cpu")
    stop_file = spec.pop("stop_file", None)
    if launched:
        device = init_process_group(device)
    threads = spec.pop("threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    try:
        train(**{**spec, "device": device})
    except Preempted as err:
        print(f"preempted: {err}", flush=True)
        if stop_file and int(os.environ.get("RANK", "0")) == 0:
            Path(stop_file).write_text(str(err))
        return PREEMPTED_EXIT
    finally:
        if launched:
            torch.distributed.destroy_process_group()
    return 0


# --------------------------------------------------------------------------------------------------
# in the job: launching the ranks
# --------------------------------------------------------------------------------------------------


def run_training(
    train: Callable[..., Any],
    distributed: Callable[[dict[str, Any], int, str | os.PathLike], None],
    spec: dict[str, Any],
    gpus: int,
    threads: int,
    spec_path: str | os.PathLike,
) -> None:
    """A training job (a classifier's, a fine-tuning's): `train(**spec)` in this process, or with
    `gpus` > 1 `distributed` (its module's `run_distributed`: one torchrun rank per GPU, DDP), which
    shares the job's `threads` among the ranks (`run_torchrun`)."""
    if gpus > 1:
        distributed({**spec, "threads": threads}, gpus, spec_path)
    else:
        train(**spec)


def torchrun_command(module: str, nproc: int, args: Sequence[str]) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc_per_node=N -m MODULE ARGS` (torchrun)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", module, *args]  # fmt: skip


def launch(
    cmd: Sequence[str],
    env: dict[str, str] | None = None,
    relay_output: bool = False,
    forward_signals: bool = True,
    settled: Callable[[], bool] | None = None,
) -> tuple[int, bool]:
    """Run a launcher (torchrun, or a study's own prefix such as `clip.launcher`) to its end; return
    (exit code, whether a signal was passed on).

    With `forward_signals`, a SIGTERM or SIGINT sent to this process is passed on to the launcher,
    once (SLURM signals the launcher too, and a second signal cuts torchrun's wait for its ranks
    short); with `settled`, a launcher that exited non-zero after such a signal is given up to
    STOP_WAIT_S for `settled()` to come true (torchrun may be gone while its signalled ranks still
    finish their step and save). `relay_output` copies the launcher's stdout and stderr to this
    process's stderr (the rule's log) line by line."""
    kw: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True} if relay_output else {}
    if env is not None:
        kw["env"] = env
    proc = subprocess.Popen(list(cmd), **kw)
    got: list[int] = []

    def forward(signum, _frame):
        if not got:
            proc.send_signal(signum)
        got.append(signum)

    old = {}
    if forward_signals:
        with contextlib.suppress(ValueError):  # signal handlers can be set from the main thread only
            for s in STOP_SIGNALS:
                old[s] = signal.signal(s, forward)
    try:
        if relay_output:
            for line in proc.stdout:
                sys.stderr.write(line)
        rc = proc.wait()
        deadline = time.monotonic() + STOP_WAIT_S
        while rc != 0 and got and settled is not None and not settled() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return rc, bool(got)


def rank_env(threads: int) -> dict[str, str]:
    """The environment of a torchrun launch: this process's, with OMP_NUM_THREADS at a rank's share
    of the job's threads and torchrun's grace period for signalled ranks (TORCH_ELASTIC_SHUTDOWN_TIMEOUT,
    SHUTDOWN_TIMEOUT_S unless the environment sets it; torch versions without it ignore it)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads),
            "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT_S))}


def run_torchrun(module: str, spec: dict[str, Any], nproc: int, spec_path: str | os.PathLike) -> None:
    """Run `python -m MODULE SPEC` on `nproc` torchrun processes, MODULE's `__main__` being
    `rank_main(SPEC, its training function)`; raise Preempted when the ranks stopped after saving a
    checkpoint, RuntimeError when they failed.

    `spec["threads"]` (default: this process's torch threads) is the job's CPU threads: each rank gets
    its share (`rank_threads`), as torch threads and OMP_NUM_THREADS. torchrun exits 1 whatever its
    ranks' codes, so rank 0 says that it stopped after saving in a stop file beside the spec."""
    threads = rank_threads(spec.get("threads") or torch.get_num_threads(), nproc)
    stop_file = Path(ddp_stop_file(spec_path))  # beside the spec Plan names
    stop_file.unlink(missing_ok=True)
    Path(spec_path).parent.mkdir(parents=True, exist_ok=True)
    Path(spec_path).write_text(json.dumps({**spec, "threads": threads, "stop_file": str(stop_file)}))
    cmd = torchrun_command(module, nproc, [str(spec_path)])
    rc, _ = launch(cmd, env=rank_env(threads), settled=stop_file.exists)
    if rc == PREEMPTED_EXIT or (rc != 0 and stop_file.exists()):
        stop_file.unlink(missing_ok=True)
        raise Preempted(f"distributed training stopped; checkpoint {spec.get('checkpoint_path')}")
    if rc != 0:
        raise RuntimeError(f"distributed training failed with exit code {rc}: {' '.join(cmd)}")
