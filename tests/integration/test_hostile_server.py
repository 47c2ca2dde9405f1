"""Hostile inputs against a real ComfyUI server with this pack (tiny weights): Cancel while the text encoder runs
lands in HappyHorse Text Encode (not in the next node), and a batch of 4 clips saved as one file keeps sound and
picture the same length.

The Cancel case needs an encode that lasts long enough to be interrupted on any CPU, so it loads a stand-in
encoder built to be slow (16 attention-heavy layers, ~64 MB): its prompt is cut to 640 tokens like any other, so
what it measures is one layer's latency, not the prompt's length.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from workflow_runs import (FRAME_S, install_inputs, install_tiny_models, mp4_outputs, node_id, read_mp4,  # first:
                           shipped_api)  # puts scripts/ on sys.path

from comfy_harness import TIMINGS  # noqa: E402
from comfy_ws import ComfyWS  # noqa: E402
from happyhorse_core.text.encoder import T5GemmaEncoderConfig  # noqa: E402
from happyhorse_core.testing.tiny_text import hf_config_dict, random_encoder, write_tiny_tokenizer  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.badinput]

SLOW_TEXT_DIR = "happyhorse_slow_t5gemma"  # in text_encoders/
T2V_256P = "HappyHorse Text to Video 256p"  # the shipped default workflow
SMALL = {"HappyHorseEmptyLatent": {"seconds": 1, "resolution": "custom", "width": 192, "height": 128}}
LONG_PROMPT = " ".join(f"word{i}" for i in range(3000))  # well over 640 tokens: cut before the encoder


def write_slow_text_folder(folder: Path) -> None:
    """A stand-in T5Gemma whose layers are slow on a CPU (16 heads x 256 per layer over 640 tokens)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_tiny_tokenizer(folder)
    cfg = T5GemmaEncoderConfig(vocab_size=vocab, hidden_size=64, intermediate_size=64, num_hidden_layers=16,
                               num_attention_heads=16, num_key_value_heads=16, head_dim=256,
                               query_pre_attn_scalar=256, sliding_window=8)
    model = random_encoder(cfg)
    save_file({f"model.encoder.{k}": v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config_dict(cfg, torch.float32)), encoding="utf-8")


@pytest.fixture(scope="module")
def info(comfy) -> dict:
    install_tiny_models(comfy.models_dir)
    install_inputs(comfy.base_dir / "input")
    slow = comfy.models_dir / "text_encoders" / SLOW_TEXT_DIR
    if not (slow / "model.safetensors").is_file():
        write_slow_text_folder(slow)
    return comfy.object_info()


def test_cancel_during_text_encoding_lands_in_text_encode(comfy, info):
    api = shipped_api(T2V_256P, info, {
        **SMALL, "HappyHorseTextEncoderLoader": {"encoder_name": f"{SLOW_TEXT_DIR}/model.safetensors"},
        "HappyHorseTextEncode": {"prompt": LONG_PROMPT}})
    encode = node_id(api, "HappyHorseTextEncode")
    with ComfyWS(comfy.port, comfy.client_id) as ws:
        pid = comfy.queue_prompt(api)

        def layer_done(e):  # Text Encode reports one progress step per encoder layer
            return (e.get("type") == "progress" and e["data"].get("prompt_id") == pid
                    and e["data"].get("node") == encode and e["data"].get("value", 0) >= 1)

        assert ws.wait_for(layer_done, timeout=300) is not None, f"no Text Encode progress:\n{comfy.log_tail()}"
        t0 = time.monotonic()
        comfy.interrupt()
        end = ws.wait_for(lambda e: e.get("type") in ("execution_interrupted", "execution_error", "execution_success")
                          and e["data"].get("prompt_id") == pid, timeout=120)
        latency = time.monotonic() - t0
    TIMINGS["cancel in Text Encode: /interrupt -> execution_interrupted (s)"] = latency
    assert end is not None and end["type"] == "execution_interrupted", end
    assert end["data"].get("node_id") == encode, f"Cancel landed in node {end['data'].get('node_id')}, not {encode}"
    assert latency < 10, f"Cancel took {latency:.1f} s"


def test_batch_of_four_keeps_sound_and_picture_in_sync(comfy, info):
    api = shipped_api(T2V_256P, info, {
        "HappyHorseEmptyLatent": {**SMALL["HappyHorseEmptyLatent"], "width": 64, "height": 64, "batch_size": 4},
        "HappyHorseSampler": {"steps": 2}})
    result = comfy.run_prompt(api, timeout=900)
    TIMINGS["batch of 4 x 1 s (s)"] = result["seconds"]
    (path,) = mp4_outputs(comfy, result)
    mp4 = read_mp4(path)
    assert mp4["frames"] == 4 * 25, mp4  # 4 clips of 4(T-1)+1 = 25 frames
    # each clip's audio was cut to its 25 frames before the clips were joined: no drift over the file
    assert abs(mp4["video_s"] - mp4["audio_s"]) <= FRAME_S + 1e-6, mp4
