"""ComfyUI's VAELoader rejects a full stable-audio-open checkpoint (VAE under `pretransform.model.`) and
accepts what happyhorse_core.tools.extract_sao_vae makes of it. The 'full checkpoint' is the tiny native
Stable Audio VAE with the prefix added and a stand-in DiT tensor beside it."""
from __future__ import annotations

import pytest
from safetensors.torch import load_file, save_file

from happyhorse_core.tools.extract_sao_vae import PREFIX, extract_sao_vae

pytestmark = pytest.mark.integration


def _decode_graph(vae_name: str) -> dict:
    return {"1": {"class_type": "VAELoader", "inputs": {"vae_name": vae_name}},
            "2": {"class_type": "EmptyLatentAudio", "inputs": {"seconds": 1.0, "batch_size": 1}},
            "3": {"class_type": "VAEDecodeAudio", "inputs": {"samples": ["2", 0], "vae": ["1", 0]}},
            "4": {"class_type": "SaveAudio", "inputs": {"audio": ["3", 0], "filename_prefix": "audio/hh_sao_extract"}}}


def test_vae_loader_needs_the_extracted_file(comfy, native_vaes):
    vae_dir = comfy.models_dir / "vae"
    sd = load_file(str(vae_dir / native_vaes["stable_audio"]))
    full = {PREFIX + k: v for k, v in sd.items()}
    full["model.model.transformer.layers.0.self_attn.to_qkv.weight"] = sd[next(iter(sd))].clone()
    save_file(full, str(vae_dir / "sao_full_checkpoint.safetensors"))
    del sd, full

    rejected = comfy.run_prompt(_decode_graph("sao_full_checkpoint.safetensors"), timeout=300, raise_on_error=False)
    assert rejected["status"] == "error" and rejected["error"]["node_type"] == "VAELoader", rejected["error"]

    extract_sao_vae(vae_dir / "sao_full_checkpoint.safetensors", vae_dir / "sao_extracted.safetensors")
    result = comfy.run_prompt(_decode_graph("sao_extracted.safetensors"), timeout=300)
    files = comfy.output_files(result)
    assert len(files) == 1 and files[0].stat().st_size > 0, result["outputs"]
