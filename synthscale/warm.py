"""Warm job starts: one process imports torch, timm, diffusers and open_clip once; each job forks from it.

On a laptop a job of the default study trains for 2 s and spends 4 s importing its libraries. With a
warm server (started by the Snakefile's `onstart` for local CPU runs, `warm_start: true`: see
`wanted`), a job's script hands itself over at its first line (`runtime.job_setup` calls `hand_over`):
the script process stays as a thin client that Snakemake waits for, and a fork of the server runs the
very same script file (Snakemake's preamble and all) with the client's stdin/stdout/stderr, working
directory, environment, umask and arguments. It is Python's forkserver with preloading
(multiprocessing.set_forkserver_preload), for jobs that are separate processes. A job computes what
it computes cold: the server only imports (with CUDA left uninitialised), each job gets its own
unseeded generators and the thread counts its environment asks for, and the default study's tables,
weights and shards are byte-identical either way (benchmarks/compare_results.py; the workflow tests
compare a warm and a cold run's shards, models and metrics).

Per connection the server forks a supervisor, which forks the job (its own process group and session,
so its DataLoader workers and torchrun children go with it) and reports its pid, then its exit status.
Signals that reach the client (Ctrl-C, SIGTERM from `kill` or a scheduler) are forwarded to the job,
so preemption saves a checkpoint as it does cold; if the client dies without a word (SIGKILL:
Snakemake stopping its jobs), the job's whole group is killed, as a cold job's would be. No server,
or no answer from it, and the job runs cold in its own process. The first jobs wait for the libraries
most jobs use (3-4 s); the rest is imported one module at a time between jobs. Jobs that import no
torch (the data and rule-based prompts, a run's first jobs) do not hand over: `job_setup(fork=False)`.

Snakemake's `benchmark:` files time the client: their wall time `s` is the job's, but `cpu_time`,
`max_rss` and the I/O columns cover only the client's own process tree; the job's own CPU time and
peak RSS end its log instead (USAGE). Run with
`--config warm_start=False` (a Python literal) when those per-job figures are what you measure
(benchmarks/bench_imagefolder_study.py does).
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Iterable, Mapping, Sequence, TextIO

ENV = "SYNTHSCALE_WARM"  # the server's socket, for the jobs of this run
# what the jobs import, in the order the server imports them; one that fails is left to the job. The
# first part (what most jobs need: 3-4 s) is imported before the first job starts, the rest between jobs.
PRELOAD_FIRST = (
    "numpy", "pandas", "PIL.Image", "torch", "torchvision", "timm", "safetensors.torch",
    "synthscale.classifier.train", "synthscale.classifier.evaluate", "synthscale.analysis.tables",
    "synthscale.analysis.report", "synthscale.analysis.scaling_report", "synthscale.analysis.quality_report",
    "synthscale.analysis.cost_report",
)
PRELOAD_LATER = (
    "matplotlib.pyplot", "seaborn", "scipy.stats", "scipy.optimize", "torchmetrics",
    "transformers", "diffusers", "open_clip", "webdataset",
    "synthscale.generation.generate", "synthscale.generation.pipelines", "synthscale.generation.finetune",
    "synthscale.generation.tinygen", "synthscale.clip.pairs", "synthscale.clip.train", "synthscale.clip.evaluate",
    "synthscale.quality.judge", "synthscale.quality.metrics", "synthscale.quality.filtering",
    "synthscale.analysis.mix_report", "synthscale.analysis.clip_report", "synthscale.analysis.filter_report",
    "synthscale.analysis.mixing", "synthscale.prompts.strategies", "synthscale.data.real",
    "synthscale.data.imagefolder", "synthscale.data.prepare", "synthscale.prompts.models", "synthscale.study.plan", "synthscale.study.sources", "synthscale.data.shards",
    "synthscale.io", "synthscale.preemption", "synthscale.distributed",
)
PRELOAD = PRELOAD_FIRST + PRELOAD_LATER
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
REPLY_TIMEOUT_S = 60.0  # a server that does not start a job within this runs it cold instead
STARTED = "synthscale.warm: this job is a fork of the run's warm server"  # a warm job's first log line
_in_job = False  # set in a forked job, whose script then runs here instead of handing over again


def in_job() -> bool:
    """Whether this process is a job forked from a warm server."""
    return _in_job


def wanted(config: Mapping[str, Any], local_exec: bool, deployment: Iterable[Any] = ()) -> bool:
    """Whether a run should start a server: `warm_start`, jobs on this machine, on the CPU, in the
    workflow's own environment. CUDA cannot be used in a fork of a process that touched it, and a
    job under `--sdm conda` or apptainer must run in its own interpreter."""
    return (bool(config.get("warm_start")) and local_exec and config.get("device", "cpu") == "cpu"
            and not list(deployment) and sys.platform.startswith("linux"))


# --- the client: a job's script process ---


class _Client:
    """Forwards the signals it gets to the job, holding those that come before the job's pid."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.held: list[int] = []
        for sig in FORWARDED:
            signal.signal(sig, self.on_signal)

    def on_signal(self, sig: int, _frame: Any) -> None:
        if self.pid is None:
            self.held.append(sig)
        else:
            _kill(self.pid, sig)

    def started(self, pid: int) -> None:
        self.pid = pid
        for sig in self.held:
            _kill(pid, sig)

    def restore(self) -> None:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
        for sig in self.held:  # the job never started: the signal is this process's again
            os.kill(os.getpid(), sig)


def hand_over(script: str | None = None, log: str | None = None) -> None:
    """Run this job's script in a fork of the warm server, if this run has one; exit with its status.
    The job's CPU time and peak RSS (which Snakemake's benchmark files cannot see) end its `log`.

    Returns (and the job runs cold, here) when there is no server, when this already is the forked
    job, or when the server does not start the job within REPLY_TIMEOUT_S."""
    path = os.environ.get(ENV)
    # the file Python runs: Snakemake's copy with its preamble (whose `__file__` names the original)
    script = script or (sys.argv[0] if sys.argv and os.path.isfile(sys.argv[0]) else None)
    if _in_job or not path or not script:
        return
    client, sock = _Client(), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(REPLY_TIMEOUT_S)
        sock.connect(path)
        request = {"script": os.path.abspath(script), "argv": sys.argv, "cwd": os.getcwd(),
                   "env": dict(os.environ), "umask": _umask()}
        socket.send_fds(sock, [(json.dumps(request) + "\n").encode()], [0, 1, 2])
        replies = sock.makefile("rb")
        started = json.loads(replies.readline() or "{}")
    except (OSError, ValueError):  # no server, a refusal or a timeout: the server kills what it started
        started = {}
    if "pid" not in started:
        sock.close()
        client.restore()
        return
    client.started(int(started["pid"]))
    sock.settimeout(None)
    _finish(replies, int(started["pid"]), log)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _finish(replies: Any, pid: int, log: str | None = None) -> None:
    """Wait for the job's status, then end the same way (forwarded signals interrupt nothing: PEP 475)."""
    try:
        done = json.loads(replies.readline() or "{}")
    except (OSError, ValueError):
        done = {}
    sys.stdout.flush()
    sys.stderr.flush()
    if "exit" not in done:
        print(f"synthscale.warm: the server's supervisor of job {pid} ended without its status", file=sys.stderr)
    code = int(done.get("exit", 1))
    if log and "cpu_s" in done:
        _note_usage(log, done["cpu_s"], done["max_rss_kb"])
    if code in (-signal.SIGINT, -signal.SIGTERM, -signal.SIGHUP, -signal.SIGKILL):
        # killed by a signal: die of the same one, as the job would have cold (not for a crash's
        # SIGSEGV or SIGABRT, which would dump this process's core)
        if code != -signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)
    os._exit(code if code >= 0 else 128 - code)


# a warm job's last log line: CPU of the job and the children it waited for; RSS of its largest process
USAGE = "synthscale.warm: job CPU {cpu:.1f} s, peak RSS {rss:.0f} MB"


def _note_usage(log: str, cpu_s: float, max_rss_kb: int) -> None:
    try:
        with open(log, "a") as f:
            print(USAGE.format(cpu=cpu_s, rss=max_rss_kb / 1024), file=f)
    except OSError:
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# --- the server ---


def serve(path: str, first: Sequence[str], later: Sequence[str], parent: int) -> None:
    """Accept jobs on the Unix socket `path` until SIGTERM or until `parent` (Snakemake) is gone: import
    `first` (jobs queue meanwhile), then `later` one module at a time while no job is waiting (a job
    that comes sooner imports what it still lacks itself)."""
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"  # torch.cuda.is_available() must not init CUDA
    listener = _listen(path)
    for name in first:
        _import(name)
    pending = list(later)
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):  # the job gets these, from its client
        signal.signal(sig, signal.SIG_IGN)
    try:
        while not stop and os.getppid() == parent and not _cuda_touched():
            _reap()
            ready, _, _ = select.select([listener], [], [], 0 if pending else 1.0)
            if ready:
                _accept(listener)
            elif pending:
                _import(pending.pop(0))
    finally:
        listener.close()
        _remove(path)
        _reap(block=True)


def _listen(path: str) -> socket.socket:
    """A listening socket at `path`, which appears only once it accepts (bound elsewhere, then renamed)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".new")
    listener.listen(64)
    os.rename(path + ".new", path)
    return listener


def _import(name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - an optional library missing, or broken: the job will say so
        pass


def _cuda_touched() -> bool:
    """A server whose imports initialised CUDA must fork nothing: the forks could not use it."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def _accept(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    if os.fork() == 0:
        listener.close()
        _supervise(conn)
    conn.close()


def _reap(block: bool = False) -> None:
    """Wait for finished supervisors (their CPU time then counts for Snakemake, which waits for us)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _supervise(conn: socket.socket) -> None:
    """In a fork of the server: start one job, report its pid, wait for it, report how it ended; a job
    whose end cannot be reported (its client is gone) is killed with its process group."""
    pid, reported = None, False
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        request, fds = _request(conn)
        if request is None or _gone(conn):
            return
        pid = os.fork()
        if pid == 0:
            conn.close()
            _run_job(request, fds)
        for fd in fds:
            os.close(fd)
        conn.sendall((json.dumps({"pid": pid}) + "\n").encode())
        status, usage = _wait(conn, pid)
        ended = {"exit": os.waitstatus_to_exitcode(status), "cpu_s": usage.ru_utime + usage.ru_stime,
                 "max_rss_kb": usage.ru_maxrss}
        conn.sendall((json.dumps(ended) + "\n").encode())
        reported = True
    except BaseException:  # noqa: BLE001 - whatever went wrong, the job must not outlive its client
        pass
    finally:
        if pid and not reported:
            _killpg(pid)
        os._exit(0)


def _request(conn: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """The client's request and its three descriptors (None if it left before sending it all)."""
    buf, fds = b"", []
    while not buf.endswith(b"\n"):
        if not fds:
            chunk, got, _, _ = socket.recv_fds(conn, 1 << 16, 3)
            fds = list(got)
        else:
            chunk = conn.recv(1 << 16)
        if not chunk:
            for fd in fds:
                os.close(fd)
            return None, []
        buf += chunk
    return json.loads(buf), fds


def _gone(conn: socket.socket) -> bool:
    """Whether the client hung up (after its request it sends nothing, so anything readable is the end)."""
    ready, _, _ = select.select([conn], [], [], 0)
    return bool(ready) and not conn.recv(1, socket.MSG_PEEK)


def _killpg(pid: int) -> None:
    """Kill the job's group, and the job itself in case it has not made its group yet."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _wait(conn: socket.socket, pid: int) -> tuple[int, Any]:
    """Wait for the job; if the client goes away first, kill the job's process group."""
    ended_r, ended_w = os.pipe()
    result: list[tuple[int, Any]] = []

    def wait() -> None:
        _, status, usage = os.wait4(pid, 0)  # usage: the job and the children it waited for
        result.append((status, usage))
        os.write(ended_w, b"x")

    threading.Thread(target=wait, daemon=True).start()
    watched = [conn, ended_r]
    while not result:
        ready, _, _ = select.select(watched, [], [])
        if conn in ready and not conn.recv(1):  # end of stream: the client was killed
            watched.remove(conn)
            _killpg(pid)
    return result[0]


def _run_job(request: dict[str, Any], fds: list[int]) -> None:
    """In a fork of the supervisor: become the job's process and run its script as __main__."""
    global _in_job
    _in_job = True
    code = 1
    try:
        os.setsid()
        for sig in (*FORWARDED, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a new Python process has them
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        _fresh_stdio()
        os.chdir(request["cwd"])
        os.umask(int(request["umask"]))
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.pop(ENV, None)  # what the job starts (torchrun's ranks, a nested run) starts cold
        tempfile.tempdir = None  # TMPDIR as the job's environment says
        sys.argv = list(request["argv"])
        _threads_from_env()
        _reseed()
        code = _run_script(request["script"])
    except BaseException:  # noqa: BLE001 - the job's setup failed: say why, on the job's stderr
        sys.excepthook(*sys.exc_info())
    finally:
        _exit(code)


def follow_stderr(old: Any, new: TextIO) -> None:
    """Logging handlers that libraries bound to stderr when imported (`old`, or the process's original
    stream; in a warm run, before this job started) write to `new` instead. Here, not in runtime.py
    (runtime's job_setup calls it too): runtime imports this module, and nothing here imports back."""
    import logging

    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream in (old, sys.__stderr__):
                handler.setStream(new)


def _fresh_stdio() -> None:
    """Python's standard streams over the job's descriptors, buffered as a new process buffers them;
    logging handlers that libraries bound to the server's stderr at import write to the job's."""
    old = sys.stderr
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False, buffering=1 if os.isatty(1) else -1)
    sys.stderr = open(2, "w", closefd=False, buffering=1, errors="backslashreplace")
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    follow_stderr(old, sys.stderr)


def _threads_from_env() -> None:
    """Thread pools sized as a new process sizes them from its environment (Snakemake sets
    OMP_NUM_THREADS and friends per job): the server's libraries sized theirs from the server's, which
    is the job's but for these."""
    omp = _count(os.environ.get("OMP_NUM_THREADS"))
    blas = _count(os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS")) or omp
    if omp and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(omp)
    if not (omp or blas):
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    for limit, api in ((blas, "blas"), (omp, "openmp")):
        if limit:
            threadpool_limits(limit, user_api=api)


def _count(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() and int(value) > 0 else None


def _reseed() -> None:
    """Unseeded generators differ per process when cold: give each job its own, as a new process has."""
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


def _run_script(script: str) -> int:
    """Run the script as Python runs a main file; its exit status, negative for a KeyboardInterrupt."""
    import runpy

    try:
        runpy.run_path(script, run_name="__main__")
        return 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return int(stop.code or 0)
        print(stop.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        return -signal.SIGINT
    except BaseException:  # noqa: BLE001 - reported as Python reports an uncaught exception
        sys.excepthook(*sys.exc_info())
        return 1


def _exit(code: int) -> None:
    """End the job as the interpreter ends: join its threads, run its atexit functions, flush, exit;
    an uncaught KeyboardInterrupt ends it by SIGINT, as Python does."""
    import atexit

    try:
        threading._shutdown()  # type: ignore[attr-defined]  # what Python does before atexit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        if code == -signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code if code >= 0 else 1)


# --- start and stop, from the Snakefile ---


def start(first: Sequence[str] = PRELOAD_FIRST, later: Sequence[str] = PRELOAD_LATER) -> subprocess.Popen | None:
    """Start a server for this process's jobs and point them at it (os.environ[ENV]). It runs in a
    session of its own: a Ctrl-C reaches the jobs through their clients, not the server."""
    folder = tempfile.mkdtemp(prefix="synthscale-warm-")
    if len(folder) > 90:  # a Unix socket's path has at most 107 bytes
        os.rmdir(folder)
        folder = tempfile.mkdtemp(prefix="synthscale-warm-", dir="/tmp")
    path = os.path.join(folder, "socket")
    argv = [path, str(os.getpid()), ",".join(first), ",".join(later)]
    proc = subprocess.Popen([sys.executable, "-m", "synthscale.warm", *argv], start_new_session=True)
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if os.path.exists(path):
        os.environ[ENV] = path
        return proc
    stop(proc)
    _remove(path)
    return None


def stop(proc: subprocess.Popen | None = None) -> None:
    """Stop the server (after the run's last job) and wait for it."""
    os.environ.pop(ENV, None)
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _remove(path: str) -> None:
    """The socket and its folder."""
    for remove in (os.unlink, os.rmdir):
        try:
            remove(path)
        except OSError:
            pass
        path = os.path.dirname(path)


if __name__ == "__main__":  # the jobs import synthscale.warm: serve from that module, not from __main__
    from synthscale import warm

    path, parent, first, later = sys.argv[1:5]
    warm.serve(path, [m for m in first.split(",") if m], [m for m in later.split(",") if m], int(parent))
