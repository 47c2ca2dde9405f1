#!/usr/bin/env bash
# Full-size DiT speed check on one NVIDIA GPU (H100 80 GB); see bench/gpu_check.py for what runs.
#   bash bench/gpu_check.sh [--budget-s 420] [--skip-compile] [--compile-sr] [--out DIR]
# Finishes in under 8 minutes: a hard `timeout` stops it at 470 s; new runs are not started
# after --budget-s (default 420 s). Without CUDA it stops at once with exit code 2.
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
exec timeout --signal=INT --kill-after=10 470 "$PY" bench/gpu_check.py "$@"
