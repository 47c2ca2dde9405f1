"""Convert the released Turbo-VAED pickle checkpoint to a decoder-only `.safetensors` file.

    python -m happyhorse_core.tools.convert_ckpt IN.ckpt OUT.safetensors

The Turbo-VAED loader reads the .ckpt directly; this converter is for people who want the
decoder-only file (smaller, memory-mapped, no pickle at load time). The pickle is read by
happyhorse_core.decoders.turbo_ckpt with `torch.load(weights_only=True)` (code in a pickle is refused,
never executed); only `decoder.*` tensors are kept, and the output is written to a temp file in the
target folder and renamed into place.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from ..decoders.turbo_ckpt import read_decoder_checkpoint
from ..weights.safetensors_io import write_safetensors


def convert_checkpoint(src: Union[str, os.PathLike], dst: Union[str, os.PathLike]) -> dict[str, int]:
    """Convert `src` (.ckpt/.pt/.pth) to `dst` (.safetensors). Returns tensor counts kept/dropped."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"checkpoint not found: {src}")
    if dst.suffix.lower() != ".safetensors":
        raise ValueError(f"output must end in .safetensors, got {dst}")
    if dst.resolve() == src.resolve():
        raise ValueError(f"output {dst} would overwrite the input checkpoint")
    tensors, total = read_decoder_checkpoint(src)
    metadata = {"format": "pt", "source": src.name, "converter": "happyhorse_core.tools.convert_ckpt"}
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(dst, tensors, metadata)
    return {"kept": len(tensors), "dropped": total - len(tensors)}


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
