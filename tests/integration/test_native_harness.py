"""The harness itself: a real ComfyUI 0.3.75 server with this pack loaded runs a graph of NATIVE nodes
(tiny random-weight Wan2.2 + Stable Audio VAEs) to an H.264/AAC mp4."""
from __future__ import annotations

import pytest

from comfy_harness import PACK_NAME, TIMINGS, check_mp4

pytestmark = pytest.mark.integration


def test_server_up_and_pack_imported(comfy):
    stats = comfy.get_json("/system_stats")
    assert stats["system"]["comfyui_version"] == "0.3.75", stats["system"]
    assert comfy.import_failures() == [], comfy.log_tail()
    loaded = [ln for ln in comfy.log_text().splitlines() if f"custom_nodes/{PACK_NAME}" in ln]
    assert loaded, f"{PACK_NAME} not in ComfyUI's custom-node import report:\n{comfy.log_tail()}"
    info = comfy.object_info()
    for node in ("VAELoader", "VAEDecode", "VAEDecodeAudio", "CreateVideo", "SaveVideo",
                 "Wan22ImageToVideoLatent", "EmptyLatentAudio"):
        assert node in info, f"core node {node} missing from /object_info"


def native_av_graph(vaes: dict[str, str], prefix: str) -> dict:
    """API graph: zero Wan2.2 latent [1,48,2,2,2] -> VAEDecode (5 frames 32x32) + 1 s audio latent
    [1,64,22] -> VAEDecodeAudio -> CreateVideo (25 fps) -> SaveVideo (mp4, h264)."""
    return {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": vaes["wan22"]}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": vaes["stable_audio"]}},
        "3": {"class_type": "Wan22ImageToVideoLatent",
              "inputs": {"vae": ["1", 0], "width": 32, "height": 32, "length": 5, "batch_size": 1}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 0]}},
        "5": {"class_type": "EmptyLatentAudio", "inputs": {"seconds": 1.0, "batch_size": 1}},
        "6": {"class_type": "VAEDecodeAudio", "inputs": {"samples": ["5", 0], "vae": ["2", 0]}},
        "7": {"class_type": "CreateVideo", "inputs": {"images": ["4", 0], "audio": ["6", 0], "fps": 25.0}},
        "8": {"class_type": "SaveVideo",
              "inputs": {"video": ["7", 0], "filename_prefix": prefix, "format": "mp4", "codec": "h264"}},
    }


def test_native_video_audio_graph_to_mp4(comfy, native_vaes):
    result = comfy.run_prompt(native_av_graph(native_vaes, "video/hh_native"), timeout=300)
    TIMINGS["native AV graph run (s)"] = result["seconds"]
    files = comfy.output_files(result)
    assert len(files) == 1 and files[0].suffix == ".mp4", result["outputs"]
    check_mp4(files[0], frames=5, width=32, height=32)
    # every tensor of the tiny files matched a parameter (else ComfyUI leaves it uninitialised)
    assert "Missing VAE keys" not in comfy.log_text(), comfy.log_tail()
