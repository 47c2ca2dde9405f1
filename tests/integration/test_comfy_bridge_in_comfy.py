"""nodes/comfy_bridge.py against the real comfy modules, in ComfyUI's own python (no server)."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from comfy_harness import TIMINGS, comfy_home

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parent / "bridge_checks.py"
CHECKS = ["devices_are_comfys", "lists_model_folders", "model_path_follows_links_and_stays_inside",
          "progress_reaches_comfy_hook", "interrupt_check_raises_comfys_exception", "wrapped_model_is_managed"]


@pytest.fixture(scope="module")
def results(comfy_python, tmp_path_factory) -> dict:
    t0 = time.monotonic()
    proc = subprocess.run([str(comfy_python), str(SCRIPT), str(comfy_home()), str(tmp_path_factory.mktemp("bridge"))],
                          capture_output=True, text=True, timeout=300)
    TIMINGS["comfy_bridge checks in ComfyUI python (s)"] = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_script_runs_exactly_these_checks(results):
    assert sorted(results) == sorted(CHECKS)


@pytest.mark.parametrize("name", CHECKS)
def test_bridge_check(results, name):
    assert results.get(name) == "ok", results.get(name)
