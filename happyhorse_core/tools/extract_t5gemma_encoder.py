"""Write the encoder half of google/t5gemma-9b-9b-ul2 as one safetensors file.

    python -m happyhorse_core.tools.extract_t5gemma_encoder models/text_encoders/t5gemma-9b-9b-ul2 \
        models/text_encoders/t5gemma-9b-9b-ul2/t5gemma_9b_encoder_bf16.safetensors

Why: HappyHorse reads only the encoder (18.5 GB in bf16); the repository also holds the decoder, 37 GB
in all. After this, the nine shards and the index can be deleted: keep config.json and the tokenizer
files in the folder (or keep the folder with only those files next to the encoder file), and pick the
new file in HappyHorse Text Encoder Loader. Keys keep their names (`model.encoder.*`); tensors are
streamed one at a time (memory-mapped) into a temporary file renamed into place when complete.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..weights.safetensors_header import ST_DTYPES
from ..weights.safetensors_io import open_checkpoint, write_safetensors_stream
from ..text.loading import select_encoder
from ..text.tokenizer import HUB_REPO

DTYPES = {"bf16": torch.bfloat16, "keep": None}


def extract_encoder(src: str | Path, dst: str | Path, dtype: str = "bf16") -> Path:
    """The `model.encoder.*` (or `encoder.*`) tensors of the checkpoint at `src`, cast to `dtype`, into `dst`."""
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise ValueError(f"output must be a .safetensors file, got {dst}")
    ckpt = open_checkpoint(src)
    keys = sorted(select_encoder(ckpt.keys(), Path(src), allow_bare=False).values())  # file keys, names kept
    cast = DTYPES[dtype]
    infos = {k: ckpt.entries[k] for k in keys}
    specs = [(k, cast if cast is not None and ST_DTYPES[infos[k].dtype].is_floating_point else infos[k].torch_dtype,
              infos[k].shape) for k in keys]
    out_dtype = {k: d for k, d, _ in specs}

    def produce(key: str) -> torch.Tensor:
        return ckpt.read(key).to(out_dtype[key])

    meta = {"format": "pt", "happyhorse": f"T5Gemma encoder extracted from {Path(src).name} ({dtype})"}
    return write_safetensors_stream(dst, specs, produce, metadata=meta)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m happyhorse_core.tools.extract_t5gemma_encoder",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help=f"the {HUB_REPO} folder (or its index json)")
    ap.add_argument("out", help="output .safetensors (encoder only)")
    ap.add_argument("--dtype", default="bf16", choices=list(DTYPES), help="bf16 (default) or keep the stored dtype")
    args = ap.parse_args(argv)
    try:
        out = extract_encoder(args.src, args.out, args.dtype)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e9:.2f} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
