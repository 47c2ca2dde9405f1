"""Partial loading with ComfyUI's real ModelPatcher (tests/comfy_lowvram_checks.py in ComfyUI's python).

* half the tiny DiT's size as budget on the `meta` device (standing in for the GPU): every matmul,
  norm and embedding reads its weight operand on the compute device, none on the CPU; without the
  adapter the same recorder sees CPU weights (so it can catch the bug);
* every layer offloaded on the CPU (forced cast path): bit-identical to the plain path for a bf16
  DiT, an fp8 DiT and the bf16 text encoder;
* LoRA-style 'diff' patches on whole stacked expert weights: partial load == full load, bit for bit.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))
from comfy_harness import check_script_tests  # noqa: E402

pytestmark = pytest.mark.lowvram

SCRIPT = Path(__file__).resolve().parent / "comfy_lowvram_checks.py"
CHECKS = ["detector_sees_cpu_weights_without_the_adapter",
          "half_budget_partial_load_computes_on_the_compute_device",
          "forced_cast_is_bit_identical_bf16_dit", "forced_cast_is_bit_identical_fp8_dit",
          "forced_cast_is_bit_identical_text_encoder", "weight_patch_partial_equals_full_load_bf16",
          "weight_patch_partial_equals_full_load_fp8", "weight_patch_changes_the_output"]

results, test_script_runs_exactly_these_checks, test_partial_load_check = check_script_tests(
    SCRIPT, CHECKS, label="partial-load checks in ComfyUI python (s)", timeout=900)
