"""Extract the Stable Audio Open VAE from stabilityai/stable-audio-open-1.0's model.safetensors.

    python -m happyhorse_core.tools.extract_sao_vae model.safetensors stable_audio_open_vae.safetensors

Why: the full checkpoint keeps the VAE under `pretransform.model.` next to the 1.2B audio DiT and
the conditioners. ComfyUI's VAELoader (0.3.75, comfy/sd.py VAE.__init__) detects the Stable Audio
VAE by the bare key `decoder.layers.1.layers.0.beta` and strips no prefix, so it rejects the full
file. HappyHorse Audio VAE Loader reads the full file in place; this tool is for ComfyUI's own VAE
Loader: it writes the VAE tensors alone (~0.6 GB) with the prefix removed, for models/vae/.

Tensors are read one at a time (memory-mapped) and streamed into OUT, which appears only when
complete (temporary file + rename), so a failed run leaves nothing half-written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..weights.safetensors_header import read_header
from ..weights.safetensors_io import CheckpointIndex, write_safetensors_stream
from ..weights.sao_vae import DETECT_KEY, PREFIX, select_sao_vae_keys


def extract_sao_vae(src: str | Path, dst: str | Path) -> Path:
    """Write the `pretransform.model.*` tensors of `src`, prefix removed, to `dst`; returns dst."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise ValueError(f"the output {dst} is the input file; give a new file name, e.g. stable_audio_open_vae.safetensors")
    entries, _ = read_header(src)
    keys = select_sao_vae_keys(entries, src, allow_bare=False)
    index = CheckpointIndex(src, "single file", entries)
    specs = [(k, entries[src_key].torch_dtype, entries[src_key].shape) for k, src_key in keys.items()]
    dst.parent.mkdir(parents=True, exist_ok=True)
    meta = {"happyhorse": f"Stable Audio Open VAE extracted from {src.name} ({PREFIX} removed)"}
    return write_safetensors_stream(dst, specs, lambda key: index.read(PREFIX + key), metadata=meta)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m happyhorse_core.tools.extract_sao_vae", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="stable-audio-open-1.0 model.safetensors")
    ap.add_argument("out", help="output .safetensors for ComfyUI/models/vae/ (e.g. stable_audio_open_vae.safetensors)")
    args = ap.parse_args(argv)
    try:
        out = extract_sao_vae(args.model, args.out)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    written = read_header(out)[0]
    print(f"wrote {out} ({len(written)} tensors, {out.stat().st_size / 1e6:.1f} MB)")
    if DETECT_KEY not in written:
        print(f"warning: {DETECT_KEY} is missing, so ComfyUI's VAE Loader will not recognise the file",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
