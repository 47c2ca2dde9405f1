"""Read the released Turbo-VAED pickle checkpoint (`turbo_vae/checkpoint-340000.ckpt`) safely.

The project's one pickle reader. It uses `torch.load(weights_only=True)` (what ComfyUI itself does for
`.ckpt` files): only tensors and plain containers are rebuilt, and a file that would need arbitrary
Python objects (a class whose `__reduce__` runs code) is refused instead of executed. The file is
memory-mapped when it is in the zip format torch.save writes, so reading it costs no more RAM than
the decoder tensors kept. Weights come from `ema_state_dict` (the reference's choice), else
`state_dict`, else the top-level dict; a leading `module.` is stripped and only `decoder.*` tensors
are kept (`decoder.` is added when no key has it).
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Mapping

import torch

from .turbo_key_map import PREFIX, canonical_key_map

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth")


def load_pickle(src: Path) -> object:
    """torch.load(weights_only=True), with errors that say why the file was refused."""
    mmap = zipfile.is_zipfile(src)  # the legacy (non-zip) format cannot be memory-mapped
    try:
        return torch.load(str(src), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith(boilerplate)]
        reason = "; ".join(lines) or type(exc).__name__
        if "GLOBAL" in reason:
            raise ValueError(
                f"refused to read {src}: it holds Python objects other than tensors and plain containers, "
                f"which could run code when unpickled ({reason}). Only plain state dicts are read; "
                "re-save the weights as a plain dict of tensors from a trusted copy of the checkpoint."
            ) from exc
        raise ValueError(f"{src} is not a torch checkpoint that can be read safely ({reason})") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{src} is not a readable torch checkpoint: {exc or 'empty or truncated file'}; "
                         "download it again") from exc


def select_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Pick `ema_state_dict`, else `state_dict`, else the dict itself; keep its tensors."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a dict checkpoint, got {type(obj).__name__}")
    for key in ("ema_state_dict", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(
            f"{source}: no tensors found (looked in 'ema_state_dict', 'state_dict' and the top level; "
            f"top-level keys: {sorted(map(str, obj))[:10]})"
        )
    return tensors


def decoder_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`module.` stripped, `decoder.` ensured, non-decoder tensors dropped; storage made unshared."""
    key_map = canonical_key_map(list(state))
    out: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for name, key in key_map.items():
        if not key.startswith(PREFIX):
            continue
        tensor = state[name].detach().contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen_storage and tensor.numel():
            tensor = tensor.clone()  # safetensors refuses tensors that share memory
        seen_storage.add(ptr)
        out[key] = tensor
    if not out:
        raise ValueError("no decoder tensors found (keys starting with 'decoder.' after stripping 'module.')")
    return out


def read_decoder_checkpoint(src: Path) -> tuple[dict[str, torch.Tensor], int]:
    """(decoder tensors keyed `decoder.*`, number of tensors in the file's state dict) from a pickle."""
    state = select_state_dict(load_pickle(src), source=str(src))
    return decoder_tensors(state), len(state)
