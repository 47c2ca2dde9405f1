"""The Stable Audio Open VAE tensors of a file, in place: a full checkpoint or a VAE-only file.

Comfy-Org's ungated `stable-audio-open-1.0.safetensors` repack (and stabilityai's gated
model.safetensors) keep the VAE under `pretransform.model.` next to the 1.2B audio DiT and the
conditioners; an extracted file (tools/extract_sao_vae) holds the same tensors without the prefix.
Either way the result is the bare VAE state dict ComfyUI's VAE class detects (by
`decoder.layers.1.layers.0.beta`); only those tensors are read, memory-mapped.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .safetensors_header import TensorInfo, read_header
from .safetensors_io import CheckpointIndex

PREFIX = "pretransform.model."
DETECT_KEY = "decoder.layers.1.layers.0.beta"  # what ComfyUI's VAE detection looks for
BARE_ROOTS = ("encoder.", "decoder.")


def select_sao_vae_keys(entries: dict[str, TensorInfo], src: Path, allow_bare: bool) -> dict[str, str]:
    """{VAE key: key in the file}. allow_bare: a VAE-only file (no prefix) is accepted as it is."""
    keys = {k[len(PREFIX):]: k for k in entries if k.startswith(PREFIX)}
    if keys:
        return keys
    bare = any(k.startswith(BARE_ROOTS) for k in entries) and DETECT_KEY in entries
    if bare and allow_bare:
        return {k: k for k in entries}
    if bare:
        raise ValueError(f"{src} has no '{PREFIX}' tensors but already looks like a VAE-only file "
                         f"({DETECT_KEY} is present): put it in models/vae/ as it is")
    first = ", ".join(sorted(entries)[:5]) or "none"
    raise ValueError(f"{src} holds no Stable Audio Open VAE (no '{PREFIX}' tensors, no {DETECT_KEY}; first keys: "
                     f"{first}): use stable-audio-open-1.0.safetensors (Comfy-Org/stable-audio-open-1.0_repackaged "
                     "or stabilityai/stable-audio-open-1.0) or a VAE extracted from it")


def read_sao_vae(path: str | Path) -> dict[str, torch.Tensor]:
    """The VAE state dict (prefix removed) of a full Stable Audio Open checkpoint or a VAE-only file."""
    path = Path(path)
    entries, _ = read_header(path)
    keys = select_sao_vae_keys(entries, path, allow_bare=True)
    index = CheckpointIndex(path, "single file", entries)
    return {key: index.read(src) for key, src in keys.items()}
