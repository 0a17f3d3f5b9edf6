#!/usr/bin/env bash
# One-shot GPU suite run (benchmarks/gpu_suite.py) on a machine with `uv sync` already done:
#   bash benchmarks/run_gpu_suite.sh [OUT_DIR [gpu_suite.py flags]]   # OUT_DIR default: $OUT, else ./gpu_suite_out
# Writes OUT_DIR/gpu_suite.json (every figure, rewritten after each section), gpu_suite.log (stdout and
# stderr) and nvidia-smi.txt. The suite stops starting sections after --budget-s; `timeout` ends it at
# SUITE_TIMEOUT seconds (default 590) whatever happens, keeping the JSON of what was measured.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"
out="${1:-${OUT:-gpu_suite_out}}"
[ $# -gt 0 ] && shift  # the rest goes to gpu_suite.py (e.g. --peak-tflops 989)
mkdir -p "$out"
limit="${SUITE_TIMEOUT:-590}"
{ nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv; } \
    > "$out/nvidia-smi.txt" 2>&1 || true
nproc > "$out/nproc.txt" 2>&1 || true
# quiet libraries, offline (no Hub), one thread per loader worker
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
timeout --signal=TERM --kill-after=15 "$limit" \
    uv run --no-sync python benchmarks/gpu_suite.py --out "$out/gpu_suite.json" --budget-s "$((limit - 90))" "$@" \
    > "$out/gpu_suite.log" 2>&1
rc=$?
echo "gpu_suite exit code: $rc (124: stopped by the $limit s timeout)" | tee -a "$out/gpu_suite.log"
grep -E '^[a-z0-9_]+: [0-9.e+-]+$|^wrote ' "$out/gpu_suite.log" || true
exit $rc
