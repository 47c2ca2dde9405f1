"""Partial loading with ComfyUI's real ModelPatcher (tests/comfy_lowvram_checks.py in ComfyUI's python).

* half the tiny DiT's size as budget on the `meta` device (standing in for the GPU): every matmul,
  norm and embedding reads its weight operand on the compute device, none on the CPU; without the
  adapter the same recorder sees CPU weights (so it can catch the bug);
* every layer offloaded on the CPU (forced cast path): bit-identical to the plain path for a bf16
  DiT, an fp8 DiT and the bf16 text encoder;
* LoRA-style 'diff' patches on whole stacked expert weights: partial load == full load, bit for bit.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.lowvram

SCRIPT = Path(__file__).resolve().parent / "comfy_lowvram_checks.py"
CHECKS = ["detector_sees_cpu_weights_without_the_adapter",
          "half_budget_partial_load_computes_on_the_compute_device",
          "forced_cast_is_bit_identical_bf16_dit", "forced_cast_is_bit_identical_fp8_dit",
          "forced_cast_is_bit_identical_text_encoder", "weight_patch_partial_equals_full_load_bf16",
          "weight_patch_partial_equals_full_load_fp8", "weight_patch_changes_the_output"]


@pytest.fixture(scope="module")
def results() -> dict:
    home = os.environ.get("COMFYUI_HOME")
    if not home or not (Path(home) / "venv" / "bin" / "python").is_file():
        pytest.fail("COMFYUI_HOME is not set to a ComfyUI install made by scripts/setup_comfyui.sh: run "
                    "`bash scripts/test.sh`, or export COMFYUI_HOME=$PWD/.cache/comfyui", pytrace=False)
    proc = subprocess.run([str(Path(home) / "venv" / "bin" / "python"), str(SCRIPT), home],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_script_runs_exactly_these_checks(results):
    assert sorted(results) == sorted(CHECKS)


@pytest.mark.parametrize("name", CHECKS)
def test_partial_load_check(results, name):
    assert results.get(name) == "ok", results.get(name)
