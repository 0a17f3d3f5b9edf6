"""The default study, alone, in a fresh results folder: wall time, job CPU time, the slowest rules and the
critical path.

    python benchmarks/bench_default.py                  # snakemake --cores 2 on config.yaml
    python benchmarks/bench_default.py --cores 2 --keep --results /tmp/study
    python benchmarks/bench_default.py --cold          # warm_start=False: every job imports for itself

The workflow runs from this repository with `--config results=<fresh folder>` (config.yaml's
`results:` key places every output, benchmark file included, under that folder), then prints
- the wall time of the whole `snakemake` run;
- the run's CPU time: user + system of every process the run started (Snakemake, its jobs and their
  workers, the warm server and its forks), from the kernel's accounting of waited-for children
  (`getrusage(RUSAGE_CHILDREN)`; a process nobody waits for, such as an orphaned helper, is missed);
- the sum of job CPU time (`cpu_time`) and job wall time (`s`) over the Snakemake benchmark files under
  `{results}/benchmarks/` (rules without `benchmark:`, the local plotting and table rules, are not in
  it). Snakemake samples a job's CPU time every 0.5 s for its first 15 s and every 30 s after, and
  keeps the last sample: a short job loses its last half second, a 36 s job can lose 20 s. The
  per-rule figures are lower bounds; the run's CPU time is the total. With warm starts (the default)
  Snakemake measures only the script process that waits for the job's fork: the wall times hold, the
  CPU times do not; `--cold` gives per-job CPU;
- the five slowest rules (job wall time summed per rule, with their CPU time and job count);
- the critical path: the longest chain of dependent jobs, each counted with its own wall time, from
  the start and end times Snakemake records per output file (`.snakemake/metadata`), the dependency
  edges being "job B reads a file job A wrote"; and how long each of its jobs waited for free cores
  after its inputs were ready (not in the sum);
- whether `snakemake -n` afterwards plans nothing.
Run it on an otherwise idle machine: wall times measure contention too.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]


# --- the jobs of a run, from Snakemake's metadata ---


def read_jobs(metadata_dir: str | os.PathLike, under: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The finished jobs whose outputs lie under `under`, from Snakemake's per-output-file records.

    Returns {job id: {"rule", "start", "end", "outputs": set, "inputs": set}}; a job that wrote several
    files has one record per file, all with its job hash, start and end."""
    under = os.path.abspath(under)
    jobs: dict[str, dict[str, Any]] = {}
    root = Path(metadata_dir)
    for rec_path in (p for p in root.rglob("*") if p.is_file()):
        try:  # urlsafe base64 of the output path; long names are split into "@"-prefixed folders
            out = base64.urlsafe_b64decode("".join(x.lstrip("@") for x in rec_path.relative_to(root).parts)).decode()
            rec = json.loads(rec_path.read_text())
        except (ValueError, OSError):
            continue
        if not os.path.abspath(out).startswith(under + os.sep) or rec.get("incomplete"):
            continue
        if rec.get("starttime") is None or rec.get("endtime") is None:
            continue
        key = f"{rec['rule']}:{rec.get('job_hash')}"
        job = jobs.setdefault(key, {"rule": rec["rule"], "start": rec["starttime"], "end": rec["endtime"],
                                    "outputs": set(), "inputs": set()})
        job["outputs"].add(os.path.abspath(out))
        job["inputs"].update(os.path.abspath(p) for p in rec.get("input", []))
    return jobs


def dependencies(jobs: Mapping[str, Mapping[str, Any]]) -> dict[str, set[str]]:
    """For each job, the jobs that wrote one of its inputs (a file, or a file inside a directory output)."""
    writer: dict[str, str] = {}
    for key, job in jobs.items():
        for out in job["outputs"]:
            writer[out] = key

    def producer(path: str) -> str | None:
        p = path
        while True:  # the file itself, else the directory output that holds it
            if p in writer:
                return writer[p]
            parent = os.path.dirname(p)
            if parent == p:
                return None
            p = parent

    deps: dict[str, set[str]] = {}
    for key, job in jobs.items():
        deps[key] = {w for w in (producer(p) for p in job["inputs"]) if w is not None and w != key}
    return deps


def critical_path(durations: Mapping[str, float], deps: Mapping[str, Iterable[str]]) -> tuple[float, list[str]]:
    """The longest chain of dependent jobs: (its total duration, its jobs from first to last).

    `deps[j]` are the jobs that must finish before j starts; a job's chain is its own duration plus
    the longest chain among its dependencies. Raises ValueError on a cycle."""
    best: dict[str, tuple[float, str | None]] = {}
    state: dict[str, int] = {}

    def visit(root: str) -> None:
        stack = [(root, False)]
        while stack:
            j, done = stack.pop()
            if done:
                prev = [(best[d][0], d) for d in deps.get(j, ())]
                length, via = max(prev, default=(0.0, None))
                best[j] = (length + float(durations[j]), via)
                state[j] = 2
                continue
            if state.get(j) == 2:
                continue
            if state.get(j) == 1:
                raise ValueError(f"the job graph has a cycle through {j}")
            state[j] = 1
            stack.append((j, True))
            for d in deps.get(j, ()):
                if state.get(d) == 1:
                    raise ValueError(f"the job graph has a cycle through {d}")
                if state.get(d) != 2:
                    stack.append((d, False))

    for j in durations:
        visit(j)
    if not best:
        return 0.0, []
    end = max(best, key=lambda j: best[j][0])
    chain, j = [], end
    while j is not None:
        chain.append(j)
        j = best[j][1]
    return best[end][0], chain[::-1]


def chain_waits(jobs: Mapping[str, Mapping[str, Any]], chain: Sequence[str],
                deps: Mapping[str, Iterable[str]]) -> list[float]:
    """Seconds each job of `chain` waited after its inputs were ready (the latest end among its
    dependencies; the run's first start for a job with none) before Snakemake started it: queueing for
    free cores, which the critical path's sum of job durations does not count."""
    t0 = min(j["start"] for j in jobs.values())
    return [max(0.0, jobs[k]["start"] - max((jobs[d]["end"] for d in deps.get(k, ())), default=t0)) for k in chain]


def rule_table(bench) -> list[dict[str, Any]]:
    """Per rule: summed job wall time `s`, CPU time and job count, slowest first (a read_benchmarks table)."""
    rows = []
    for rule, g in bench.groupby("rule"):
        rows.append({"rule": rule, "wall_s": float(g["s"].sum()), "cpu_s": float(g["cpu_time"].sum()),
                     "jobs": int(len(g))})
    return sorted(rows, key=lambda r: -r["wall_s"])


# --- the run ---


def snakemake(args: list[str], results: Path, log=None, warm: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args, "--config", f"results={results}",
           f"warm_start={warm}"]  # a Python literal: --config reads `false` as a string
    return subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT if log else None, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--results", help="a fresh (absent or empty) results folder; default: a new temp folder")
    ap.add_argument("--keep", action="store_true", help="keep the results folder")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--cold", action="store_true",
                    help="warm_start=False: every job imports its own libraries (per-job CPU in the benchmark files)")
    args = ap.parse_args()

    results = Path(args.results or tempfile.mkdtemp(prefix="synthscale-default-")).resolve()
    if results.exists() and any(results.iterdir()):
        sys.exit(f"{results} is not empty: the benchmark needs a fresh results folder")
    results.mkdir(parents=True, exist_ok=True)
    log_path = results.with_name(results.name + ".snakemake.log")
    print(f"results: {results}\nsnakemake log: {log_path}", flush=True)
    t0, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "w") as log:
        run = snakemake(["--cores", str(args.cores)], results, log, warm=not args.cold)
    wall, after = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    run_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if run.returncode != 0:
        sys.exit(f"snakemake failed (exit {run.returncode}); see {log_path}")
    dry = snakemake(["-n"], results, subprocess.PIPE)
    nothing = "Nothing to be done" in dry.stdout

    from synthscale.analysis.cost_report import read_benchmarks
    from synthscale.study.config import load_config
    from synthscale.study.plan import Plan

    # the run's Plan: config.yaml with --config results=..., as snakemake above read it (cwd ROOT)
    plan = Plan({**load_config(ROOT / "config.yaml", ROOT), "results": str(results)})
    bench = read_benchmarks(plan.benchmarks_dir)
    rules = rule_table(bench)
    jobs = read_jobs(ROOT / ".snakemake" / "metadata", results)
    deps = dependencies(jobs)
    length, chain = critical_path({k: j["end"] - j["start"] for k, j in jobs.items()}, deps)
    waits = chain_waits(jobs, chain, deps)

    m, s = divmod(wall, 60)
    start = "cold starts" if args.cold else "warm starts"
    print(f"\nwall time: {wall:.0f} s ({int(m)} min {s:.0f} s), {len(jobs)} jobs, --cores {args.cores}, {start}")
    print(f"run CPU time (every process Snakemake and its jobs waited for): {run_cpu:.0f} s")
    what = "sampled, a lower bound" if args.cold else "warm: the waiting script processes only"
    print(f"job CPU time (benchmark files, {len(bench)} jobs; {what}): "
          f"{bench['cpu_time'].sum():.0f} s; job wall time: {bench['s'].sum():.0f} s")
    print("five slowest rules (summed over their jobs):")
    for r in rules[:5]:
        print(f"  {r['rule']:<20} wall {r['wall_s']:7.1f} s  CPU {r['cpu_s']:7.1f} s  {r['jobs']:4d} jobs")
    print(f"critical path: {length:.0f} s over {len(chain)} jobs, plus {sum(waits):.0f} s its jobs waited "
          f"for free cores once their inputs were ready")
    for k, w in zip(chain, waits):
        j = jobs[k]
        print(f"  {j['rule']:<20} {j['end'] - j['start']:7.1f} s  (waited {w:5.1f} s)  {sorted(j['outputs'])[0]}")
    print(f"snakemake -n afterwards: {'nothing to do' if nothing else 'PLANS JOBS (see below)'}")
    if not nothing:
        print(dry.stdout[-3000:])
    if args.json:
        Path(args.json).write_text(json.dumps({
            "wall_s": wall, "run_cpu_s": run_cpu, "jobs": len(jobs), "cores": args.cores, "warm": not args.cold,
            "job_cpu_s": float(bench["cpu_time"].sum()), "job_wall_s": float(bench["s"].sum()),
            "rules": rules, "critical_path_s": length, "critical_path_wait_s": sum(waits),
            "critical_path": [jobs[k]["rule"] for k in chain], "dry_run_empty": nothing,
        }, indent=1))
    if not args.keep and not args.results:
        shutil.rmtree(results)


if __name__ == "__main__":
    main()
