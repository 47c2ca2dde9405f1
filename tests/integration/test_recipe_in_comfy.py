"""The reference's recipe in a real ComfyUI on tiny weights: latent previews and node warnings arrive over the
websocket, a voice sets the clip length, Super-Resolution re-encodes the start image itself and continues the
sampler's noise stream, and the mp4 carries the original recording, as long as the picture.

One hand-built graph (not a shipped workflow, which the files engineer owns) exercises every new input.
"""
from __future__ import annotations

import io
import time

import av

import pytest

from workflow_runs import install_inputs, install_tiny_models, mp4_files, read_mp4, write_wav  # first: sys.path

from comfy_harness import TIMINGS  # noqa: E402
from comfy_ws import ComfyWS  # noqa: E402
from happyhorse_core.testing.tiny_models import (DIT_FILES, SAO_VAE_FILE, TEXT_ENCODER_FILE,  # noqa: E402
                                                 TURBO_VAED_FILE, WAN22_VAE_FILE)
from workflow_specs import START_IMAGE  # noqa: E402

pytestmark = pytest.mark.integration

VOICE = "recipe_voice_1p2s.wav"  # 1.2 s: the clip becomes 30 audio frames -> 8 latent frames -> 29 video frames


def graph(seed: int = 3) -> dict:
    L = lambda node, out=0: [node, out]  # noqa: E731
    return {
        "dit": {"class_type": "HappyHorseModelLoader", "inputs": {
            "model_name": DIT_FILES["distill"], "variant": "auto", "weight_dtype": "bf16", "fp8_scope": "shared",
            "attention": "auto"}},
        "sr": {"class_type": "HappyHorseModelLoader", "inputs": {
            "model_name": DIT_FILES["sr_540p"], "variant": "auto", "weight_dtype": "bf16", "fp8_scope": "shared",
            "attention": "auto"}},
        "te": {"class_type": "HappyHorseTextEncoderLoader", "inputs": {
            "encoder_name": TEXT_ENCODER_FILE, "weight_dtype": "bf16", "device": "default"}},
        "text": {"class_type": "HappyHorseTextEncode", "inputs": {
            "text_encoder": L("te"), "prompt": "A woman smiles and talks.", "speaker": "A woman",
            "language": "Mandarin", "line": "你好，世界", "more_dialogue": "", "background_sound": "",
            "negative_prompt": "", "raw": False}},
        "voice": {"class_type": "LoadAudio", "inputs": {"audio": VOICE}},
        "img": {"class_type": "LoadImage", "inputs": {"image": START_IMAGE}},
        "batch": {"class_type": "ImageBatch", "inputs": {"image1": L("img"), "image2": L("img")}},
        "wan": {"class_type": "VAELoader", "inputs": {"vae_name": WAN22_VAE_FILE}},
        "sao": {"class_type": "VAELoader", "inputs": {"vae_name": SAO_VAE_FILE}},
        "latent": {"class_type": "HappyHorseEmptyLatent", "inputs": {   # 80x72 is floored to 64x64: a warning
            "aspect": "16:9", "resolution": "custom", "width": 80, "height": 72, "seconds": 5.0,
            "batch_size": 1, "voice": L("voice")}},
        "voice_ref": {"class_type": "HappyHorseAudioReference", "inputs": {
            "audio": L("voice"), "vae": L("sao"), "audio_latent": L("latent", 1), "vae_fp32": True}},
        "sampler": {"class_type": "HappyHorseSampler", "inputs": {
            "model": L("dit"), "conditioning": L("text"), "video_latent": L("latent"),
            "audio_latent": L("latent", 1), "seed": seed, "mode": "distilled", "steps": 3, "video_cfg": 5.0,
            "video_cfg_late": 2.0, "audio_cfg": 5.0, "voice_latent": L("voice_ref"), "noise_device": "cpu"}},
        "upscale": {"class_type": "HappyHorseSuperResolution", "inputs": {
            "sr_model": L("sr"), "conditioning": L("text"), "video_latent": L("sampler"),
            "audio_latent": L("sampler", 1), "resolution": "540p", "seed": -1, "steps": 2, "cfg": True,
            "cfg_scale": 3.5, "renoise_level": 220, "noise_device": "cpu", "image": L("batch"), "vae": L("wan")}},
        "turbo": {"class_type": "HappyHorseTurboVAEDLoader", "inputs": {"vae_name": TURBO_VAED_FILE}},
        # the mp4 is made from the base stage (a Turbo-VAED decode at 512x512 takes minutes on a busy CPU); the SR
        # latent is saved and its size checked
        "decode": {"class_type": "HappyHorseDecodeVideo", "inputs": {"turbo_vaed": L("turbo"),
                                                                     "video_latent": L("sampler")}},
        "save_sr": {"class_type": "SaveLatent", "inputs": {"samples": L("upscale"), "filename_prefix": "recipe_sr"}},
        "video": {"class_type": "CreateVideo", "inputs": {"images": L("decode"), "fps": 25.0,
                                                          "audio": L("voice_ref", 1)}},
        "save": {"class_type": "SaveVideo", "inputs": {"video": L("video"), "filename_prefix": "video/recipe",
                                                       "format": "mp4", "codec": "h264"}},
    }


def with_defaults(api: dict, info: dict) -> dict:
    """Fill every widget the graph leaves out with the node's default from /object_info (other engineers add
    loader options; this test is about the recipe nodes)."""
    for node in api.values():
        spec = info[node["class_type"]]["input"]
        for name, entry in {**spec.get("required", {}), **spec.get("optional", {})}.items():
            if name in node["inputs"] or len(entry) < 2 or not isinstance(entry[1], dict):
                continue
            if "default" in entry[1]:
                node["inputs"][name] = entry[1]["default"]
            elif isinstance(entry[0], list) and entry[0] and name in spec.get("required", {}):
                node["inputs"][name] = entry[0][0]
    return api


@pytest.fixture(scope="module")
def recipe_inputs(comfy):
    install_tiny_models(comfy.models_dir)
    install_inputs(comfy.base_dir / "input")
    write_wav(comfy.base_dir / "input" / VOICE, seconds=1.2, rate=22050)
    return comfy


def test_previews_warnings_voice_length_and_sr_with_image(recipe_inputs):
    comfy = recipe_inputs
    t0 = time.monotonic()
    with ComfyWS(comfy.port, comfy.client_id) as ws:
        pid = comfy.queue_prompt(with_defaults(graph(), comfy.object_info()))
        end = ws.wait_for(lambda e: e.get("type") in ("execution_success", "execution_error",
                                                      "execution_interrupted")
                          and e["data"].get("prompt_id") == pid, timeout=900)
        previews, texts = ws.preview_images(), ws.progress_texts()
    TIMINGS["recipe graph: voice + sampler + SR with image (s)"] = time.monotonic() - t0
    assert end is not None and end["type"] == "execution_success", (end, comfy.log_tail())

    # latent previews: ComfyUI's previewer (--preview-method auto -> latent2rgb) sent real images
    assert len(previews) >= 3, f"{len(previews)} preview images; log:\n{comfy.log_tail()}"
    for data in previews:  # JPEG: starts with SOI, ends with EOI, and PyAV can decode it
        assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    with av.open(io.BytesIO(previews[-1]), format="mjpeg") as box:
        frame = next(box.decode(video=0))
        assert frame.width > 0 and frame.height > 0

    # warnings shown on the node (progress text) and logged, every run
    by_node = {}
    for node, text in texts:
        by_node.setdefault(node, []).append(text)
    assert any("80x72" in t and "64x64" in t for t in by_node.get("latent", [])), by_node
    assert any("image batch of 2" in t for t in by_node.get("upscale", [])), by_node
    assert texts and all(text.startswith("⚠") for _, text in texts)  # nodes/node_warnings.py format
    log = comfy.log_text()
    assert "80x72" in log and "image batch of 2" in log

    # the clip is as long as the voice (1.2 s -> 30 audio frames -> 8 latent frames -> 29 video frames), with the
    # original recording in the mp4, as long as the picture
    (mp4,) = [p for p in mp4_files(comfy.base_dir / "output") if p.name.startswith("recipe")]
    info = read_mp4(mp4)
    assert (info["width"], info["height"], info["frames"]) == (64, 64, 29), info
    assert abs(info["audio_s"] - info["video_s"]) < 0.03, info
    # SR with the start image ran at the 540p-class size (64x64 -> 512x512: latent 32x32), same 8 latent frames
    (latent_file,) = [p for p in (comfy.base_dir / "output").rglob("recipe_sr*.latent")]
    from safetensors.torch import load_file
    assert tuple(load_file(str(latent_file))["latent_tensor"].shape) == (1, 48, 8, 32, 32)
