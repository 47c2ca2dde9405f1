"""nodes/runtime.oom_advice in ComfyUI's own python: an out-of-memory error becomes advice, models are offloaded."""
from __future__ import annotations

from pathlib import Path

import pytest

from comfy_harness import check_script_tests

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parent / "oom_checks.py"
CHECKS = ["oom_becomes_advice_and_model_is_offloaded", "oom_inside_a_forward_of_the_placed_model",
          "oom_with_block_swap_removes_hooks_and_offloads", "oom_without_models_still_advises",
          "other_errors_pass_through_untouched", "device_mismatch_becomes_advice_and_frees",
          "host_allocation_failures_become_advice", "next_prompt_runs_after_an_oom"]

results, test_script_runs_exactly_these_checks, test_oom_check = check_script_tests(
    SCRIPT, CHECKS, label="oom_advice checks in ComfyUI python (s)", timeout=300)
