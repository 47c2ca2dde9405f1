#!/usr/bin/env bash
# The one test command (README and .ci/run both call it). Installs what it needs on a fresh clone
# (.venv/ for the tests, a real ComfyUI 0.3.75 in .cache/comfyui, chromium + playwright-core in
# .cache/ui-smoke; each step is skipped when already done), then runs the whole pytest suite.
# Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
export COMFYUI_HOME="${COMFYUI_HOME:-$ROOT/.cache/comfyui}"
export PW_DIR="${PW_DIR:-$ROOT/.cache/ui-smoke}"
bash scripts/setup_comfyui.sh "$COMFYUI_HOME"
bash scripts/setup_ui.sh "$PW_DIR"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$rc"
