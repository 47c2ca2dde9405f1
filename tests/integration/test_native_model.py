"""HappyHorse as a native MODEL, in ComfyUI's own python (no server): flow BaseModel, sigmas, and
bit parity of SamplerCustomAdvanced + the pack's GUIDER / SIGMAS / SAMPLER / NOISE with the one-node
sampler (distilled, base + CFG, image-to-video, voice-driven). See native_checks.py."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from comfy_harness import TIMINGS, comfy_home

pytestmark = [pytest.mark.integration, pytest.mark.native]

SCRIPT = Path(__file__).resolve().parent / "native_checks.py"
CHECKS = ["model_is_flow_base_model", "model_sampling_sd3_changes_shift", "sigmas_match_pack_schedules",
          "parity_distilled", "parity_distilled_batch2", "parity_base_cfg", "parity_i2v_distilled",
          "parity_i2v_base", "parity_voice_distilled", "parity_voice_base", "stock_nodes_run",
          "joint_latent_required", "lora_peft_core_loader", "lora_kohya_alpha_core_loader", "lora_peft_bare_keys",
          "lora_fp8_patched_at_fetch_time", "lora_partial_load_equals_merged", "lora_one_expert_changes_only_its_rows",
          "lora_matching_nothing_is_an_error"]


@pytest.fixture(scope="module")
def results(comfy_python, tmp_path_factory) -> dict:
    t0 = time.monotonic()
    proc = subprocess.run([str(comfy_python), str(SCRIPT), str(comfy_home()), str(tmp_path_factory.mktemp("native"))],
                          capture_output=True, text=True, timeout=900)
    TIMINGS["native MODEL checks in ComfyUI python (s)"] = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_script_runs_exactly_these_checks(results):
    assert sorted(results) == sorted(CHECKS)


@pytest.mark.parametrize("name", CHECKS)
def test_native_check(results, name):
    assert results.get(name) == "ok", results.get(name)
