"""ComfyUI's VAELoader rejects a full stable-audio-open checkpoint (VAE under `pretransform.model.`) and
accepts what happyhorse_core.tools.extract_sao_vae makes of it; HappyHorse Audio VAE Loader reads the full
checkpoint in place from models/checkpoints/ (as Comfy-Org's repack is downloaded), through a symlink, and
decodes the same audio as the extracted file. The 'full checkpoint' is the tiny native Stable Audio VAE with
the prefix added and a stand-in DiT tensor beside it."""
from __future__ import annotations

import pytest
from safetensors.torch import load_file, save_file

from happyhorse_core.tools.extract_sao_vae import PREFIX, extract_sao_vae

pytestmark = pytest.mark.integration


def _decode_graph(vae_name: str, loader: str = "VAELoader") -> dict:
    return {"1": {"class_type": loader, "inputs": {"vae_name": vae_name}},
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


def _audio(result: dict, comfy) -> "torch.Tensor":
    import av
    import numpy as np
    import torch
    (path,) = comfy.output_files(result)
    with av.open(str(path)) as box:
        return torch.from_numpy(np.concatenate([f.to_ndarray() for f in box.decode(audio=0)], axis=-1))


def test_audio_vae_loader_reads_the_full_checkpoint_in_place(comfy, native_vaes):
    vae_dir, ckpt_dir = comfy.models_dir / "vae", comfy.models_dir / "checkpoints"
    sd = load_file(str(vae_dir / native_vaes["stable_audio"]))
    full = {PREFIX + k: v for k, v in sd.items()}
    full["model.model.transformer.layers.0.self_attn.to_qkv.weight"] = sd[next(iter(sd))].clone()
    store = comfy.base_dir / "elsewhere"
    store.mkdir(exist_ok=True)
    save_file(full, str(store / "stable-audio-open-1.0.safetensors"))
    del sd, full
    link = ckpt_dir / "stable-audio-open-1.0.safetensors"
    if not link.is_symlink():
        link.symlink_to(store / "stable-audio-open-1.0.safetensors")  # e.g. from the Hugging Face cache

    assert "stable-audio-open-1.0.safetensors" in comfy.object_info()["HappyHorseAudioVAELoader"]["input"][
        "required"]["vae_name"][0]
    in_place = comfy.run_prompt(_decode_graph("stable-audio-open-1.0.safetensors", "HappyHorseAudioVAELoader"),
                                timeout=300)
    extracted = comfy.run_prompt(_decode_graph(native_vaes["stable_audio"], "HappyHorseAudioVAELoader"), timeout=300)
    a, b = _audio(in_place, comfy), _audio(extracted, comfy)
    assert a.shape == b.shape and a.abs().max() > 0 and (a == b).all()  # same weights -> same FLAC samples
