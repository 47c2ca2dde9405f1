"""Without COMFYUI_HOME the server fixture must FAIL (an error, not a skip), naming the fix."""
from __future__ import annotations

import os
import subprocess
import sys

from comfy_harness import REPO


def test_missing_comfyui_home_fails_not_skips():
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_HOME", "PYTEST_ADDOPTS")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/integration/test_native_harness.py::test_server_up_and_pack_imported"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "COMFYUI_HOME is not set" in proc.stdout and "scripts/test.sh" in proc.stdout
    assert "1 error" in proc.stdout and "skipped" not in proc.stdout
