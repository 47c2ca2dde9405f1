"""Convert the released Turbo-VAED pickle checkpoint to a decoder-only `.safetensors` file.

    python -m happyhorse_core.tools.convert_ckpt IN.ckpt OUT.safetensors

This is the only place the project reads a pickle, and it does so with
`torch.load(weights_only=True)`: a file that would need arbitrary Python objects (a class whose
`__reduce__` runs code) is refused instead of executed. The weights are taken from
`ema_state_dict` (the reference's choice), else `state_dict`, else the top-level dict; a leading
`module.` is stripped, only `decoder.*` tensors are kept (the prefix is added when no key has it),
and the output is written to a temp file in the target folder and renamed into place.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch

from ..decoders.turbo_loading import canonical_key_map
from ..weights.safetensors_io import write_safetensors

PREFIX = "decoder."


def _load_pickle(src: Path) -> object:
    try:
        return torch.load(str(src), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith(boilerplate)]
        reason = "; ".join(lines) or type(exc).__name__
        if "GLOBAL" in reason:
            raise ValueError(
                f"refused to read {src}: it holds Python objects other than tensors and plain containers, "
                f"which could run code when unpickled ({reason}). This converter only reads plain state dicts; "
                "re-save the weights as a plain dict of tensors from a trusted copy of the checkpoint."
            ) from exc
        raise ValueError(f"{src} is not a torch checkpoint that can be read safely ({reason})") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{src} is not a readable torch checkpoint: {exc or 'empty or truncated file'}") from exc


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


def convert_checkpoint(src: Union[str, os.PathLike], dst: Union[str, os.PathLike]) -> dict[str, int]:
    """Convert `src` (.ckpt/.pt/.pth) to `dst` (.safetensors). Returns tensor counts kept/dropped."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"checkpoint not found: {src}")
    if dst.suffix.lower() != ".safetensors":
        raise ValueError(f"output must end in .safetensors, got {dst}")
    if dst.resolve() == src.resolve():
        raise ValueError(f"output {dst} would overwrite the input checkpoint")
    state = select_state_dict(_load_pickle(src), source=str(src))
    tensors = decoder_tensors(state)
    metadata = {"format": "pt", "source": src.name, "converter": "happyhorse_core.tools.convert_ckpt"}
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(dst, tensors, metadata)
    return {"kept": len(tensors), "dropped": len(state) - len(tensors)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m happyhorse_core.tools.convert_ckpt",
        description="Convert a Turbo-VAED .ckpt (torch pickle) to a decoder-only .safetensors file.",
    )
    parser.add_argument("src", help="input checkpoint, e.g. turbo_vae/checkpoint-340000.ckpt")
    parser.add_argument("dst", help="output file, e.g. turbo_vae/TurboV3-Wan22-TinyShallow_7_7.safetensors")
    args = parser.parse_args(argv)
    try:
        counts = convert_checkpoint(args.src, args.dst)
    except (ValueError, FileNotFoundError) as exc:
        print(f"HappyHorse convert_ckpt: error: {exc}", file=sys.stderr)
        return 2
    print(f"HappyHorse convert_ckpt: wrote {args.dst} ({counts['kept']} decoder tensors, {counts['dropped']} dropped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
