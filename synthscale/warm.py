"""Warm job starts: one process imports torch, timm, diffusers and open_clip once; each job forks from it.

On a laptop a job of the default study trains for 2 s and spends 4 s importing its libraries. With a
warm server (started by the Snakefile's `onstart` for local runs, `warm_start: true`), a job's script
hands itself over at its first line (`runtime.job_setup` calls `hand_over`): the script process stays
as a thin client that Snakemake waits for, and a fork of the server runs the very same script file
(Snakemake's preamble and all) with the client's stdin/stdout/stderr, working directory, environment
and arguments. It is Python's own forkserver with preloading (multiprocessing.set_forkserver_preload),
for jobs that are separate processes. A job computes exactly what it computes cold: nothing the
server imports runs any numerics, every job seeds its own generators, and the study's tables, weights
and shards are byte-identical either way (tests/workflow/test_warm.py).

Per connection the server forks a supervisor, which forks the job (a session leader, so its
DataLoader workers and torchrun children form one process group) and reports its pid, then its exit
status and resource use. Signals that reach the client (Ctrl-C, SIGTERM from `kill` or a scheduler)
are forwarded to the job, so preemption saves a checkpoint as it does cold; if the client dies without
a word (SIGKILL: Snakemake killing its jobs), the job's whole group is killed, as a cold job's would be.
No server, or no answer from it, and the job simply runs cold in its own process.

Snakemake's `benchmark:` files time the client: their wall time `s` is the job's, but `cpu_time` and
`max_rss` cover only the client's own process tree. Run with `--config warm_start=false` when those
per-job figures are what you measure (benchmarks/bench_imagefolder_study.py does).
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
import traceback
from typing import Any, Iterable, Sequence

ENV = "SYNTHSCALE_WARM"  # the server's socket, for the jobs of this run
# what the jobs import; a module that fails to import is left for the job to import (and fail on)
PRELOAD = (
    "numpy", "pandas", "scipy.stats", "scipy.optimize", "matplotlib.pyplot", "seaborn", "PIL.Image",
    "torch", "torchvision", "timm", "torchmetrics", "safetensors.torch", "transformers", "diffusers",
    "open_clip", "webdataset",
    "synthscale.train", "synthscale.evaluate", "synthscale.generate", "synthscale.generators",
    "synthscale.finetune", "synthscale.tinygen", "synthscale.clip", "synthscale.clip_eval",
    "synthscale.quality_metrics", "synthscale.filtering", "synthscale.analysis", "synthscale.report",
    "synthscale.mix_report", "synthscale.clip_report", "synthscale.filter_report",
    "synthscale.mixing", "synthscale.prompts", "synthscale.data", "synthscale.imagefolder",
)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_in_job = False  # set in a forked job, whose script then runs here instead of handing over again
STARTED = "synthscale.warm: this job is a fork of the run's warm server"  # a job's first log line


def in_job() -> bool:
    """Whether this process is a job forked from a warm server."""
    return _in_job


# --- the wire: one JSON message per line, file descriptors alongside ---


def _send(sock: socket.socket, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = (json.dumps(msg) + "\n").encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def _recv(sock: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """One message (None at end of stream) and the descriptors that came with its first bytes."""
    buf, fds = b"", []
    while not buf.endswith(b"\n"):
        if max_fds and not fds:
            chunk, got, _, _ = socket.recv_fds(sock, 65536, max_fds)
            fds = list(got)
        else:
            chunk = sock.recv(65536)
        if not chunk:
            return None, fds
        buf += chunk
    return json.loads(buf), fds


# --- the client: a job's script process ---


def hand_over(script: str | None = None) -> None:
    """Run this job's script in a fork of the warm server, if this run has one; exit with its status.

    Returns (and the job runs cold, here) when there is no server, when this already is the forked
    job, or when the server does not take the job."""
    path = os.environ.get(ENV)
    # the file Python runs: Snakemake's copy with its preamble (whose `__file__` names the original)
    script = script or (sys.argv[0] if sys.argv and os.path.isfile(sys.argv[0]) else None)
    if _in_job or not path or not script:
        return
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        request = {"script": os.path.abspath(script), "argv": sys.argv, "cwd": os.getcwd(),
                   "env": dict(os.environ), "umask": _umask()}
        _send(sock, request, fds=[0, 1, 2])
        started, _ = _recv(sock)
    except OSError:
        return
    if not started or "pid" not in started:
        return
    _follow(sock, int(started["pid"]))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _follow(sock: socket.socket, pid: int) -> None:
    """Forward signals to the job until it ends, then end the same way."""
    for sig in FORWARDED:
        signal.signal(sig, lambda s, _frame: _kill(pid, s))
    done, _ = _recv(sock)  # a forwarded signal's handler returns, and the read resumes (PEP 475)
    sys.stdout.flush()
    sys.stderr.flush()
    code = int(done["exit"]) if done else 1
    if done is None:
        print(f"synthscale.warm: the server's supervisor of job {pid} ended without its status", file=sys.stderr)
    if code < 0:  # killed by a signal: die of the same one, as the job would have cold
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)
    os._exit(code if code >= 0 else 128 - code)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# --- the server ---


def preload(modules: Iterable[str]) -> list[str]:
    """Import what the jobs will import; returns the modules that failed (the job imports them itself)."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional library missing, or broken: the job will say so
            failed.append(name)
    return failed


def serve(path: str, modules: Iterable[str], parent: int) -> None:
    """Accept jobs on the Unix socket `path` until SIGTERM or until `parent` (Snakemake) is gone."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)  # jobs queue here while the imports run
    preload(modules)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while not stop and os.getppid() == parent:
        _reap()
        ready, _, _ = select.select([listener], [], [], 1.0)
        if ready:
            conn, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                _supervise(conn)
            conn.close()
    listener.close()
    _reap(block=True)


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
    """In a fork of the server: start one job, report its pid, wait for it, report how it ended."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        request, fds = _recv(conn, max_fds=3)
        if request is None or len(fds) != 3:
            os._exit(1)
        pid = os.fork()
        if pid == 0:
            conn.close()
            _run_job(request, fds)
        for fd in fds:
            os.close(fd)
        _send(conn, {"pid": pid})
        status, usage = _wait(conn, pid)
        _send(conn, {"exit": os.waitstatus_to_exitcode(status), "cpu_s": usage.ru_utime + usage.ru_stime,
                     "max_rss_kb": usage.ru_maxrss})
        code = 0
    except OSError:
        pass
    os._exit(code)


def _wait(conn: socket.socket, pid: int) -> tuple[int, Any]:
    """Wait for the job; if the client goes away first, kill the job's process group."""
    ended_r, ended_w = os.pipe()
    result: list[tuple[int, Any]] = []

    def wait() -> None:
        _, status, usage = os.wait4(pid, 0)
        result.append((status, usage))
        os.write(ended_w, b"x")

    threading.Thread(target=wait, daemon=True).start()
    watched = [conn, ended_r]
    while not result:
        ready, _, _ = select.select(watched, [], [])
        if conn in ready and not conn.recv(1):  # end of stream: the client was killed
            watched.remove(conn)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if ended_r in ready:
            os.read(ended_r, 1)
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
        _reseed()
        code = _run_script(request["script"])
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _fresh_stdio() -> None:
    """Python's standard streams over the job's descriptors, buffered as a new process buffers them."""
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False, buffering=1 if os.isatty(1) else -1)
    sys.stderr = open(2, "w", closefd=False, buffering=1, errors="backslashreplace")
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr


def _reseed() -> None:
    """Unseeded generators differ per process when cold: give each job its own, as a new process has."""
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


def _run_script(script: str) -> int:
    import runpy

    try:
        runpy.run_path(script, run_name="__main__")
        return 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return int(stop.code or 0)
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - reported as Python reports an uncaught exception
        traceback.print_exc()
        return 1


# --- start and stop, from the Snakefile ---


def start(modules: Sequence[str] = PRELOAD) -> subprocess.Popen | None:
    """Start a server for this process's jobs and point them at it (os.environ[ENV]); Linux only (None
    elsewhere: fork after importing system frameworks is unsafe on macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    folder = tempfile.mkdtemp(prefix="synthscale-warm-")
    path = os.path.join(folder, "socket")
    proc = subprocess.Popen([sys.executable, "-m", "synthscale.warm", path, str(os.getpid()), *modules])
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if os.path.exists(path):
        os.environ[ENV] = path
    return proc


def stop(proc: subprocess.Popen | None = None) -> None:
    """Stop the server (after the run's last job) and wait for it."""
    path = os.environ.pop(ENV, None)
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if path:
        _remove(path)


def _remove(path: str) -> None:
    for remove in (os.unlink, os.rmdir):
        try:
            remove(path)
        except OSError:
            pass
        path = os.path.dirname(path)


if __name__ == "__main__":  # the jobs import synthscale.warm: serve from that module, not from __main__
    from synthscale import warm

    warm.serve(sys.argv[1], sys.argv[3:], int(sys.argv[2]))
