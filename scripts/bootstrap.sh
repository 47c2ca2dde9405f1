#!/usr/bin/env bash
# Create .venv/ in the repo root with CPU torch and the test dependencies (idempotent).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.happyhorse-deps
WANT="$(sha1sum pyproject.toml | cut -c1-40)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  # torch==2.13.0 is the CPU wheel on this machine's disk; elsewhere pip picks it from PyPI.
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q --disable-pip-version-check \
      safetensors einops numpy av pytest hypothesis psutil \
      "transformers==4.56.0" tokenizers sentencepiece scipy 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import torch, safetensors, einops, numpy, av, pytest, hypothesis, psutil, transformers, tokenizers, scipy"
  echo "$WANT" > "$STAMP"
fi
