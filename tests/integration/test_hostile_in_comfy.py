"""Hostile inputs through the pack's nodes in ComfyUI's own python (hostile_checks.py): the negative prompt is
encoded only on demand, Cancel stops Text Encode between layers, warnings come every run, Decode Audio keeps each
clip of a batch as long as its video and refuses NaN, Empty Latent bounds batch_size x seconds."""
from __future__ import annotations

from pathlib import Path

import pytest

from comfy_harness import check_script_tests

pytestmark = [pytest.mark.integration, pytest.mark.badinput]

SCRIPT = Path(__file__).resolve().parent / "hostile_checks.py"
CHECKS = ["negative_prompt_is_encoded_only_when_a_consumer_needs_it",
          "negative_is_encoded_before_a_released_encoder_leaves_ram", "cancel_stops_text_encode_before_its_next_layer",
          "truncation_is_warned_on_every_run", "decode_audio_cuts_each_clip_of_a_batch_to_its_video",
          "decode_audio_refuses_nan_instead_of_a_broken_track", "empty_latent_bounds_batch_times_seconds"]

results, test_script_runs_exactly_these_checks, test_hostile_check = check_script_tests(
    SCRIPT, CHECKS, label="hostile-input checks in ComfyUI python (s)", timeout=600,
    workdir="hostile")
