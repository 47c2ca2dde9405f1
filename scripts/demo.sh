#!/usr/bin/env bash
# The main job, on a fresh machine: install everything (.venv/, ComfyUI 0.3.75 in .cache/comfyui) and run
# the default text-to-video+audio workflow in a real ComfyUI on the tiny built-in weights -> out/*.mp4.
# Extra arguments go to scripts/demo.py (e.g. --out my.mp4).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
export COMFYUI_HOME="${COMFYUI_HOME:-$ROOT/.cache/comfyui}"
bash scripts/setup_comfyui.sh "$COMFYUI_HOME"
exec .venv/bin/python scripts/demo.py "$@"
