"""HappyHorse as a native MODEL, in ComfyUI's own python (no server): flow BaseModel, sigmas, bit parity of
SamplerCustomAdvanced + the pack's GUIDER / SIGMAS / SAMPLER / NOISE with the one-node sampler (distilled,
base + CFG, image-to-video, voice-driven), LoRA against merged weights, EasyCache and TorchCompileModel.
See native_checks.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from comfy_harness import run_check_script

pytestmark = [pytest.mark.integration, pytest.mark.native]

SCRIPT = Path(__file__).resolve().parent / "native_checks.py"
CHECKS = ["model_is_flow_base_model", "model_sampling_sd3_changes_shift", "sigmas_match_pack_schedules",
          "parity_distilled", "parity_distilled_batch2", "parity_base_cfg", "parity_i2v_distilled",
          "parity_i2v_base", "parity_voice_distilled", "parity_voice_base", "stock_nodes_run",
          "joint_latent_required", "easycache_runs_and_skips", "lora_peft_core_loader",
          "lora_kohya_alpha_core_loader", "lora_peft_bare_keys", "lora_fp8_patched_at_fetch_time",
          "lora_on_gemm_padded_weights", "lora_partial_load_equals_merged", "lora_one_expert_changes_only_its_rows",
          "lora_matching_nothing_is_an_error"]
SLOW_CHECKS = ["torch_compile_model_per_block"]  # inductor on CPU: minutes


def run_checks(names: list[str], label: str) -> dict:
    return run_check_script(SCRIPT, *names, label=f"{label} in ComfyUI python (s)", timeout=1800)


@pytest.fixture(scope="module")
def results() -> dict:
    return run_checks(CHECKS, "native MODEL checks")


def test_script_knows_every_check():
    script = SCRIPT.read_text()
    for name in CHECKS + SLOW_CHECKS:
        assert f"def {name}(" in script, name


@pytest.mark.parametrize("name", CHECKS)
def test_native_check(results, name):
    assert results.get(name) == "ok", results.get(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_CHECKS)
def test_native_slow_check(name):
    result = run_checks([name], name)
    assert result.get(name) == "ok", result.get(name)
