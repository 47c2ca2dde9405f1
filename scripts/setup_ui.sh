#!/usr/bin/env bash
# Install what the UI tests (tests/ui/) need: Debian's chromium and npm's playwright-core.
#
#   bash scripts/setup_ui.sh [PW_DIR]        # PW_DIR defaults to .cache/ui-smoke in the repo root
#
# Idempotent: each step is skipped when its result is already there. playwright-core is used with
# the system browser (executablePath /usr/bin/chromium), so no browser build is downloaded.
# Needs root (or sudo) for apt-get the first time; `apt-get update` runs only when apt does not know
# the chromium package yet.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PW_DIR="${1:-$ROOT/.cache/ui-smoke}"
PLAYWRIGHT_SPEC="${PLAYWRIGHT_SPEC:-playwright-core@1.65.1}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
T0=$(date +%s)
step() { echo "[setup_ui] $(( $(date +%s) - T0 ))s: $*"; }

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)

if [ ! -x "$CHROMIUM" ]; then
  if ! apt-cache show chromium >/dev/null 2>&1; then
    step "apt-get update (apt does not know chromium yet)"
    "${SUDO[@]}" apt-get update -qq
  fi
  step "apt-get install chromium"
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
"$CHROMIUM" --version 2>/dev/null || { echo "[setup_ui] $CHROMIUM does not run" >&2; exit 1; }

mkdir -p "$PW_DIR"
if [ ! -f "$PW_DIR/node_modules/playwright-core/package.json" ]; then
  command -v npm >/dev/null || { echo "[setup_ui] npm not found: install Node.js 18+ (Debian: nodejs npm)" >&2; exit 1; }
  step "npm install $PLAYWRIGHT_SPEC into $PW_DIR"
  npm install --prefix "$PW_DIR" --no-audit --no-fund --silent "$PLAYWRIGHT_SPEC"
fi
step "ready: playwright-core $(node -p "require('$PW_DIR/node_modules/playwright-core/package.json').version") in $PW_DIR"
