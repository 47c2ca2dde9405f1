"""nodes/comfy_bridge.py against the real comfy modules, in ComfyUI's own python (no server)."""
from __future__ import annotations

from pathlib import Path

import pytest

from comfy_harness import run_check_script

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parent / "bridge_checks.py"
CHECKS = ["devices_are_comfys", "lists_model_folders", "model_path_follows_links_and_stays_inside",
          "progress_reaches_comfy_hook", "interrupt_check_raises_comfys_exception", "wrapped_model_is_managed"]


@pytest.fixture(scope="module")
def results(comfy_python, tmp_path_factory) -> dict:
    return run_check_script(comfy_python, SCRIPT, tmp_path_factory.mktemp("bridge"),
                            label="comfy_bridge checks in ComfyUI python (s)", timeout=300)


def test_script_runs_exactly_these_checks(results):
    assert sorted(results) == sorted(CHECKS)


@pytest.mark.parametrize("name", CHECKS)
def test_bridge_check(results, name):
    assert results.get(name) == "ok", results.get(name)
