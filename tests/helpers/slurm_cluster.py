"""A throwaway single-node SLURM cluster for tests, built from Debian's packages.

`SlurmCluster(root).start()` writes a minimal slurm.conf under `root` (proctrack/linuxproc, task/none,
select/cons_tres with CPU and memory as consumables, no accounting, every state and log file under
`root`), links it at SLURM's default path /etc/slurm/slurm.conf (see below), starts its own munged,
slurmctld and slurmd in the foreground on free ports, and waits until the node is idle. `env()` gives
the environment that points SLURM's clients (sbatch, squeue, srun) at it through SLURM_CONF.
`stop()` ends exactly the daemons it started, by pid.

Why the default path: the jobstep executor (snakemake-executor-plugin-slurm-jobstep 0.6) strips every
SLURM_* variable, SLURM_CONF included, before it calls `srun` inside a job, so that srun only finds
the config at the compiled-in default. The link is made only where no config exists there (or a
stale link of ours), and removed again on stop.

The node advertises a fake GPU (gres `gpu:fake:1`, File=/dev/null) so that GPU requests can be
scheduled and refused like on a real cluster.

The pytest fixture `slurm_cluster` (session scope) skips, with the reason, when the binaries are
missing or the process is not root (slurmd must run as root to launch jobs); it fails instead when
SYNTHSCALE_REQUIRE names `slurm` (CI, .ci/run).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .require import require_or_skip

DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# synthscale test cluster"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "srun", "sinfo", "scancel")
PARTITION = "debug"
NODE_CPUS = 2
NODE_MEMORY_MB = 8000
NODE_GPUS = 1
GPU_TYPE = "fake"


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def missing_reason() -> str | None:
    """Why a SLURM cluster cannot be started here, or None when it can."""
    missing = [b for b in BINARIES if _which(b) is None]
    if missing:
        return (
            f"SLURM binaries not found: {', '.join(missing)} "
            "(install: apt-get install -y slurmctld slurmd slurm-client munge, or run .ci/slurm-setup.sh)"
        )
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a test SLURM cluster needs root (slurmd launches jobs as their user)"
    if DEFAULT_CONF.exists() and not DEFAULT_CONF.is_symlink():
        return f"{DEFAULT_CONF} holds a real SLURM config; not starting a test cluster beside it"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "etc" / "slurm.conf"
        self.ctld_log = self.root / "log" / "slurmctld.log"
        self.slurmd_log = self.root / "log" / "slurmd.log"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}

    # ---------------------------------------------------------------- config
    def write_config(self) -> None:
        for d in ("etc", "log", "state", "spool", "munge", "run"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o755)
        mem = NODE_MEMORY_MB
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
            mem = min(mem, int(avail * 0.8))
        except (ValueError, OSError):
            pass
        self.memory_mb = mem
        r = self.root
        (self.conf.parent / "plugstack.conf").write_text("")
        conf = f"""\
{MARKER}
PlugStackConfig={self.conf.parent}/plugstack.conf
ClusterName=synthscale-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
MailProg=/bin/true
SlurmctldLogFile={self.ctld_log}
SlurmdLogFile={self.slurmd_log}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=defer_batch
# keep finished jobs visible to squeue (the executor's status command without accounting)
MinJobAge=600
KillWait=10
InactiveLimit=0
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={mem} Gres=gpu:{GPU_TYPE}:{NODE_GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        self.conf.write_text(conf)
        # a fake GPU: slurm schedules and counts it; /dev/null stands in for the device file
        (self.conf.parent / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={self.node} Name=gpu Type={GPU_TYPE} File=/dev/null\n"
        )

    def _default_conf_is_ours(self) -> bool:
        """True when /etc/slurm/slurm.conf is absent, or a link we made (live or left dangling)."""
        if not DEFAULT_CONF.exists() and not DEFAULT_CONF.is_symlink():
            return True
        if not DEFAULT_CONF.is_symlink():
            return False
        target = Path(os.readlink(DEFAULT_CONF))
        return not target.exists() or target.read_text(errors="replace").startswith(MARKER)

    def link_default_conf(self) -> None:
        if not self._default_conf_is_ours():
            raise RuntimeError(f"{DEFAULT_CONF} is a real SLURM config; a test cluster will not replace it")
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        if DEFAULT_CONF.is_symlink():
            DEFAULT_CONF.unlink()
        DEFAULT_CONF.symlink_to(self.conf)
        self.linked_default = True

    def unlink_default_conf(self) -> None:
        if getattr(self, "linked_default", False) and DEFAULT_CONF.is_symlink():
            if Path(os.readlink(DEFAULT_CONF)) == self.conf:
                DEFAULT_CONF.unlink()
        self.linked_default = False

    def env(self, base: dict | None = None) -> dict:
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
        return env

    # ------------------------------------------------------------- lifecycle
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True
        )
        log.close()

    def start(self, timeout: float = 60) -> "SlurmCluster":
        self.write_config()
        self.link_default_conf()
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        self._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={self.root}/munge/munged.pid",
                f"--seed-file={self.root}/munge/munged.seed",
                f"--log-file={self.root}/log/munged.log",
            ],
        )
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged socket")
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._ok(["scontrol", "ping"], "UP"), timeout, "slurmctld")
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
        self._wait(self._node_idle, timeout, "the node to become idle")
        return self

    def _ok(self, argv: list[str], needle: str) -> bool:
        try:
            out = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return out.returncode == 0 and needle in out.stdout

    def _node_idle(self) -> bool:
        try:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], env=self.env(), capture_output=True, text=True, timeout=10
            )
        except subprocess.TimeoutExpired:
            return False
        return out.stdout.strip().startswith("idle")

    def _wait(self, ready, timeout: float, what: str) -> None:
        end = time.time() + timeout
        while time.time() < end:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    self.stop()
                    raise RuntimeError(
                        f"{name} exited with {p.returncode} while waiting for {what}:\n{self.logs()}"
                    )
            if ready():
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}:\n{self.logs()}")

    def logs(self, tail: int = 40) -> str:
        parts = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel leftover jobs, then end the daemons this object started, by pid (newest first)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(
                ["scancel", "--full", "--user=root"], env=self.env(), capture_output=True, timeout=20
            )
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
        self.procs.clear()
        self.unlink_default_conf()

    # --------------------------------------------------------------- helpers
    def submitted_job_ids(self) -> list[int]:
        """Ids of every batch job slurmctld accepted, read from its log."""
        text = self.ctld_log.read_text(errors="replace") if self.ctld_log.exists() else ""
        return [int(m) for m in re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", text)]

    def completed_job_ids(self) -> list[int]:
        text = self.ctld_log.read_text(errors="replace") if self.ctld_log.exists() else ""
        return [int(m) for m in re.findall(r"_job_complete: JobId=(\d+) done", text)]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    reason = missing_reason()
    if reason:
        require_or_skip("slurm", reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
