"""nodes/comfy_bridge.py against the real comfy modules, in ComfyUI's own python (no server)."""
from __future__ import annotations

from pathlib import Path

import pytest

from comfy_harness import check_script_tests

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parent / "bridge_checks.py"
CHECKS = ["devices_are_comfys", "lists_model_folders", "model_path_follows_links_and_stays_inside",
          "progress_reaches_comfy_hook", "interrupt_check_raises_comfys_exception", "wrapped_model_is_managed"]

results, test_script_runs_exactly_these_checks, test_bridge_check = check_script_tests(
    SCRIPT, CHECKS, label="comfy_bridge checks in ComfyUI python (s)", timeout=300, workdir="bridge")
