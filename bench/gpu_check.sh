#!/usr/bin/env bash
# The one prepared GPU check (one NVIDIA GPU with >= 70 GB: H100 80 GB / H200); see bench/gpu_check.py.
#   bash bench/gpu_check.sh [--budget-s 430] [--only eager,micro,decode,fp8,compiled,e2e]
# Finishes in under 8 minutes: nothing new starts after --budget-s (default 430 s) and a hard
# `timeout` stops it at 470 s. Writes bench/results/gpu_check_<gpu>_<date>.json, then refreshes
# the README performance table from the newest results file. Without CUDA it stops at once (exit 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to $PY (torch missing, CPU-only build, or no GPU)." >&2
  echo "This check needs one NVIDIA GPU with at least 70 GB; on CPU use: $PY bench/gpu_check.py --dry-run" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout --signal=INT --kill-after=10 470 "$PY" bench/gpu_check.py "$@"
"$PY" bench/perf_table.py --write
