"""The pack's built-in tiny random weights, laid out like a ComfyUI `models/` folder.

    python -m happyhorse_core.testing.tiny_models MODELS_DIR

writes deterministic random stand-ins of every file the workflows need, small enough to run
on a CPU in seconds. They produce noise-like clips: they exist to exercise the real loaders,
nodes and workflows end to end (demo, integration and UI tests), never to make pictures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .tiny_dit import write_tiny_dit
from ..weights.safetensors_io import write_safetensors

# Names the shipped workflows reference (relative to models/<folder>/).
DIT_FILES = {
    "distill": "happyhorse/happyhorse_tiny_distill.safetensors",
    "base": "happyhorse/happyhorse_tiny_base.safetensors",
    "sr_540p": "happyhorse/happyhorse_tiny_540p_sr.safetensors",
    "sr_1080p": "happyhorse/happyhorse_tiny_1080p_sr.safetensors",
}
TEXT_ENCODER_DIR = "happyhorse_tiny_t5gemma"  # in text_encoders/
TEXT_ENCODER_FILE = f"{TEXT_ENCODER_DIR}/model.safetensors"
TURBO_VAED_FILE = "happyhorse_tiny_turbo_vaed.safetensors"  # in vae/
WAN22_VAE_FILE = "happyhorse_tiny_wan22_vae.safetensors"  # in vae/ (native Wan2.2 VAE layout)
SAO_VAE_FILE = "happyhorse_tiny_stable_audio_vae.safetensors"  # in vae/ (native Stable Audio VAE layout)


def write_tiny_turbo_vaed(path: str | Path, seed: int = 4242) -> Path:
    """A tiny random Turbo-VAED (golden case1 structure) as safetensors with `decoder.*` keys."""
    from ..decoders import TurboVAED, TurboVAEDConfig
    model = TurboVAED(TurboVAEDConfig.tiny())
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.state_dict().items():
        fan_in = max(1, v[0].numel()) if v.ndim > 1 else 1
        std = fan_in ** -0.5 if v.ndim > 1 else 0.02
        sd[k] = (torch.randn(v.shape, generator=g) * std).to(v.dtype).contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(path, sd, metadata={"happyhorse": "tiny random Turbo-VAED (test weights)"})
    return path


def write_tiny_models(models_dir: str | Path, *, native_vaes: bool = True) -> dict[str, Path]:
    """Write every tiny file under models_dir/{diffusion_models,text_encoders,vae}; returns their paths."""
    root = Path(models_dir)
    out: dict[str, Path] = {}
    for i, (variant, name) in enumerate(DIT_FILES.items()):
        out[f"dit_{variant}"] = write_tiny_dit(root / "diffusion_models" / name, variant, seed=i)
    from .tiny_text import write_tiny_text_folder
    te = root / "text_encoders" / TEXT_ENCODER_DIR
    te.mkdir(parents=True, exist_ok=True)
    write_tiny_text_folder(te)
    out["text_encoder"] = te / "model.safetensors"
    out["turbo_vaed"] = write_tiny_turbo_vaed(root / "vae" / TURBO_VAED_FILE)
    if native_vaes:
        from .tiny_native_vaes import write_tiny_stable_audio_vae, write_tiny_wan22_vae
        out["wan22_vae"] = write_tiny_wan22_vae(root / "vae" / WAN22_VAE_FILE)
        out["sao_vae"] = write_tiny_stable_audio_vae(root / "vae" / SAO_VAE_FILE)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m happyhorse_core.testing.tiny_models", description=__doc__.split("\n\n")[0])
    ap.add_argument("models_dir", help="a ComfyUI models/ folder (subfolders are created)")
    args = ap.parse_args(argv)
    for name, path in write_tiny_models(args.models_dir).items():
        print(f"{name:14s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def tiny_substitute(api_graph: dict) -> dict:
    """Point the file widgets of an API-format graph at the tiny files (demo and tests).

    HappyHorse model loaders get the tiny DiT of their `variant` widget (distill if auto), the text
    encoder / Turbo-VAED loaders the tiny ones, native VAELoaders the tiny Wan2.2 VAE when the name
    mentions "wan" and the tiny Stable Audio VAE otherwise. Returns a new graph.
    """
    out = {}
    for nid, node in api_graph.items():
        node = {**node, "inputs": dict(node.get("inputs", {}))}
        inp, kind = node["inputs"], node.get("class_type")
        if kind == "HappyHorseModelLoader":
            variant = inp.get("variant", "auto")
            inp["model_name"] = DIT_FILES["distill" if variant == "auto" else variant]
        elif kind == "HappyHorseTextEncoderLoader":
            inp["encoder_name"] = TEXT_ENCODER_FILE
        elif kind == "HappyHorseTurboVAEDLoader":
            inp["vae_name"] = TURBO_VAED_FILE
        elif kind == "VAELoader":
            inp["vae_name"] = WAN22_VAE_FILE if "wan" in str(inp.get("vae_name", "")).lower() else SAO_VAE_FILE
        out[nid] = node
    return out
