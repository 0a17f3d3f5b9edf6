"""synthscale.warm: a job handed to the warm server behaves as the same job run cold, to the process
that waits for it (Snakemake): same arguments, directory, environment and standard streams, same exit
status, signals delivered, and nothing left running when the waiting process is killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthscale import warm

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm starts are Linux-only")

# A job script as Snakemake writes one: it hands over first, then does its work.
JOB = '''
import os, signal, sys, time
from synthscale import warm
warm.hand_over()
preloaded = "wave" in sys.modules  # imported by the server, never by this script
import json
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": os.environ.get("JOB_VAR"),
                  "warm_env": os.environ.get(warm.ENV), "stdin": sys.stdin.read(), "preloaded": preloaded,
                  "pid": os.getpid()}), flush=True)
print("on stderr", file=sys.stderr, flush=True)
what = sys.argv[1]
if what == "raise":
    raise ValueError("boom in the job")
if what == "exit":
    sys.exit(75)
if what == "interrupt":
    raise KeyboardInterrupt
if what == "shutdown":  # what the interpreter does at the end: join threads, run atexit functions
    import atexit, threading
    atexit.register(lambda: open(sys.argv[2] + ".atexit", "w").close())
    threading.Thread(target=lambda: (time.sleep(0.5), open(sys.argv[2] + ".thread", "w").close())).start()
if what == "segv":
    os.kill(os.getpid(), signal.SIGKILL)
if what == "wait":
    signal.signal(signal.SIGTERM, lambda *_: (print("checkpoint saved", flush=True), sys.exit(75)))
    child = os.fork()  # a loader worker, in the job's process group
    if child == 0:
        time.sleep(60)
        os._exit(0)
    open(sys.argv[2], "w").write(f"{os.getpid()} {child}")
    time.sleep(60)
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A warm server that has imported `wave` (a stand-in for torch), for this test process's jobs."""
    proc = warm.start(["wave"], later=())
    assert proc is not None and os.environ.get(warm.ENV), "the server did not start"
    yield proc
    warm.stop(proc)
    assert proc.returncode == 0


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(JOB)
    return path


def run_job(job: Path, *args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(job), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "JOB_VAR": "from-the-client", **(env or {})}, **kw)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent is dead too)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_job_sees_the_clients_world(server, job, tmp_path):
    import json

    other = tmp_path / "elsewhere"
    other.mkdir()
    proc = run_job(job, "ok", "x y", cwd=other, input="from stdin")
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.splitlines()[0])
    assert seen["preloaded"], "the job imported its modules itself: it did not run in the warm server"
    assert seen["argv"] == ["ok", "x y"] and seen["cwd"] == str(other) and seen["stdin"] == "from stdin"
    assert seen["env"] == "from-the-client"
    assert seen["warm_env"] is None, "what the job starts must start cold"
    assert "on stderr" in proc.stderr


def test_without_a_server_the_job_runs_cold(job, tmp_path):
    import json

    proc = run_job(job, "ok", env={warm.ENV: str(tmp_path / "no-such-socket")})
    assert proc.returncode == 0, proc.stderr
    assert not json.loads(proc.stdout.splitlines()[0])["preloaded"]


@pytest.mark.parametrize("what,code", [("raise", 1), ("exit", 75), ("segv", -signal.SIGKILL),
                                       ("interrupt", -signal.SIGINT)])
def test_exit_status_is_the_jobs(server, job, what, code):
    proc = run_job(job, what)
    assert proc.returncode == code, proc.stderr
    if what == "raise":
        assert "ValueError: boom in the job" in proc.stderr and "Traceback" in proc.stderr


def test_job_ends_as_the_interpreter_ends(server, job, tmp_path):
    """Non-daemon threads are joined and atexit functions run before the job's status is reported."""
    proc = run_job(job, "shutdown", str(tmp_path / "mark"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mark.thread").exists() and (tmp_path / "mark.atexit").exists()


def test_the_jobs_cpu_time_ends_its_log(server, tmp_path):
    """Snakemake's benchmark files see only the client: the job's CPU time is written to its log."""
    import re

    log, script = tmp_path / "job.log", tmp_path / "busy.py"
    script.write_text(f"from synthscale import warm\nwarm.hand_over(log={str(log)!r})\n"
                      "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n")
    assert run_job(script).returncode == 0
    pattern = re.escape(warm.USAGE).replace(re.escape("{cpu:.1f}"), "([0-9.]+)")
    found = re.fullmatch(pattern.replace(re.escape("{rss:.0f}"), "([0-9]+)"), log.read_text().strip())
    assert found, log.read_text()
    assert 0.5 <= float(found.group(1)) < 5 and int(found.group(2)) > 0


def wait_for(path: Path, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    return [int(x) for x in path.read_text().split()]


def test_sigterm_reaches_the_job(server, job, tmp_path):
    """A scheduler's SIGTERM to the waiting process lets the job save and exit 75, as it would cold."""
    pids, out = tmp_path / "pids", tmp_path / "out"
    with open(out, "w") as stdout:  # a file, not a pipe: the job's worker holds its copy of stdout
        client = subprocess.Popen([sys.executable, str(job), "wait", str(pids)], stdout=stdout)
    job_pid, worker = wait_for(pids)
    try:
        assert job_pid != client.pid
        client.send_signal(signal.SIGTERM)
        assert client.wait(timeout=30) == 75 and "checkpoint saved" in out.read_text()
    finally:
        os.kill(worker, signal.SIGKILL)


def test_killed_client_takes_the_job_and_its_workers_with_it(server, job, tmp_path):
    """SIGKILL to the waiting process (Snakemake stopping its jobs) leaves no job nor worker running."""
    pids = tmp_path / "pids"
    client = subprocess.Popen([sys.executable, str(job), "wait", str(pids)], stdout=subprocess.DEVNULL)
    job_pid, worker = wait_for(pids)
    client.kill()
    client.wait()
    deadline = time.monotonic() + 10
    while (alive(job_pid) or alive(worker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(job_pid) and not alive(worker)


def test_server_ends_with_its_parent(tmp_path):
    """A server whose Snakemake is gone (killed without its onerror hook) stops by itself."""
    script = tmp_path / "parent.py"
    script.write_text("import os, sys, time\nfrom synthscale import warm\np = warm.start(['wave'], later=())\n"
                      "print(p.pid, os.environ[warm.ENV], flush=True)\nos._exit(0)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60).stdout
    pid, path = out.split()
    deadline = time.monotonic() + 15
    while alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(int(pid))
    assert not Path(path).parent.exists(), "the server left its socket folder behind"


def test_every_script_hands_over_before_its_imports():
    """A script's imports above its job_setup call run cold in the waiting process, every job: none may."""
    import ast

    from helpers import REPO

    for script in sorted((REPO / "scripts").glob("*.py")):
        body = ast.parse(script.read_text()).body
        first = next(i for i, node in enumerate(body) if isinstance(node, ast.Expr)
                     and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "job_setup")
        imports = [node for node in body[:first] if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert [getattr(node, "module", None) for node in imports] == ["synthscale.runtime"], script.name


SLOW_IMPORT = "import time\ntime.sleep(3)\n"


def test_a_client_gone_before_its_job_starts_leaves_no_job(job, tmp_path, monkeypatch):
    """A job whose client was killed while the server was busy (importing) is never run unwatched."""
    (tmp_path / "slow_module.py").write_text(SLOW_IMPORT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = warm.start(["slow_module"], later=())
    try:
        time.sleep(0.5)  # the server is in its 3 s import now
        pids = tmp_path / "pids"
        client = subprocess.Popen([sys.executable, str(job), "wait", str(pids)], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        client.kill()
        client.wait()
        time.sleep(4)  # the server has accepted the dead client's request by now
        assert not pids.exists(), "the job ran although its client was gone"
    finally:
        warm.stop(proc)


PROBE = """
import json, logging, os, sys, time
from synthscale import warm
warm.hand_over()
preloaded = "transformers" in sys.modules  # imported by the server, not by this script
import torch, threadpoolctl, transformers
pools = {p["user_api"]: p["num_threads"] for p in threadpoolctl.threadpool_info()}
handler = logging.getLogger("transformers").handlers
print(json.dumps({"warm": warm.in_job(), "preloaded": preloaded,
                  "torch_threads": torch.get_num_threads(), "pools": pools,
                  "cuda_initialized": torch.cuda.is_initialized(), "seed": torch.initial_seed(),
                  "handler_on_stderr": all(h.stream is sys.stderr for h in handler
                                           if isinstance(h, logging.StreamHandler))}))
"""


def test_a_job_under_the_real_preload_is_set_up_as_a_cold_one(tmp_path):
    """torch, transformers and threadpoolctl preloaded: the job's thread pools follow its own
    OMP_NUM_THREADS, its torch generator is its own, CUDA is untouched, and library log handlers
    write to the job's stderr."""
    import json

    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    threads = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def run(extra=None):
        out = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=120,
                             env={**os.environ, **threads, **(extra or {})})
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.splitlines()[-1])

    cold = run({warm.ENV: ""})
    proc = warm.start(["numpy", "torch"], later=["threadpoolctl", "transformers"])
    try:
        deadline = time.monotonic() + 90
        while not (first := run())["preloaded"]:  # the server imports one module at a time
            assert time.monotonic() < deadline, "the server never finished its imports"
            time.sleep(1)
        second = run()
    finally:
        warm.stop(proc)
    assert not cold["warm"] and first["warm"] and second["warm"]
    for seen in (first, second):
        assert seen["torch_threads"] == cold["torch_threads"] == 1
        assert seen["pools"] == cold["pools"] and set(seen["pools"].values()) == {1}
        assert not seen["cuda_initialized"] and seen["handler_on_stderr"]
    assert first["seed"] != second["seed"], "two warm jobs share one torch generator"


def test_preload_names_every_synthscale_module_a_script_imports():
    """The warm server preloads each synthscale module a script imports at its top (the server skips a
    module it cannot import, so each entry must exist)."""
    import ast
    import importlib.util

    for name in warm.PRELOAD:
        if name.startswith("synthscale."):
            assert importlib.util.find_spec(name) is not None, f"warm.PRELOAD names {name}, which does not exist"

    from helpers import REPO

    for script in sorted((REPO / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                folder = REPO / node.module.replace(".", "/")  # `from synthscale.clip import train`: a module
                names = [f"{node.module}.{alias.name}" if (folder / f"{alias.name}.py").is_file() else node.module
                         for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("synthscale.") and name != "synthscale.runtime":
                    assert name in warm.PRELOAD, f"{script.name} imports {name}, which warm.PRELOAD leaves out"


def test_a_cold_job_does_not_wait_for_a_busy_server(tmp_path, monkeypatch):
    """`job_setup(fork=False)` (a job without torch: the digits, rule-based prompts) starts at once,
    while the server is still importing; the default `fork=True` queues on the server's socket."""
    import socket
    import types

    from synthscale.runtime import job_setup

    path = str(tmp_path / "socket")
    busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # listens, never accepts: a server importing
    busy.bind(path)
    busy.listen(8)
    monkeypatch.setenv(warm.ENV, path)
    monkeypatch.setattr(warm, "REPLY_TIMEOUT_S", 1.0)
    monkeypatch.setattr(sys, "argv", [__file__])  # the job's script: this file exists
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # job_setup tees stderr into the log; undone after
    smk = types.SimpleNamespace(log=[str(tmp_path / "job.log")])
    try:
        t = time.monotonic()
        job_setup(smk, fork=False)
        cold = time.monotonic() - t
        assert cold < 0.5, f"a cold job waited {cold:.1f} s for the server"
        t = time.monotonic()
        job_setup(smk)  # tries the server, gives up after REPLY_TIMEOUT_S, then runs cold
        assert time.monotonic() - t >= 0.9, "a forking job did not ask the server"
    finally:
        busy.close()
