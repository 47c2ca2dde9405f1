"""Stream any accepted DiT checkpoint into one fp8 (or merged bf16) safetensors file.

    python -m happyhorse_core.tools.convert_fp8 IN OUT.safetensors --dtype fp8_e4m3fn_scaled --scope shared
    python -m happyhorse_core.tools.convert_fp8 distill/ magihuman_distill_bf16.safetensors --dtype bf16

`--dtype bf16` merges a sharded folder (the official fp32 distill / SR folders are ~61 GB) into one
bf16 file (~30.6 GB; norms, embedders and heads stay fp32 as the loader keeps them), the single file
the shipped workflows' notes mention as an alternative to the folder.

IN is anything `load_dit` accepts (folder, index, single file, any prefix/schema/dtype). OUT uses
our key names (no prefix) and the storage `load_dit` would build with the same options:
- block linears in scope: fp8 (`--scope shared` = the single-weight middle layers, `all` = every
  block linear); with `fp8_e4m3fn_scaled` each has a scale under `<layer>.weight_scale`
  (0-d fp32, the model's own buffer name; weight ≈ fp8.float() * scale, scale = absmax / 448),
  e.g. `block.layers.4.mlp.down_proj.weight` + `block.layers.4.mlp.down_proj.weight_scale`;
- other block linears bf16; norms, embedders, output heads (and rope bands if present) fp32.
Safetensors metadata: happyhorse_format = "dit-fp8", weight_dtype, fp8_scope, source,
scale_naming and, when known, happyhorse_variant (which load_dit then uses by default).
Tensors are produced one at a time and written to a temporary file renamed into place at the
end, so a failed run leaves no partial OUT. Loading OUT gives the same weights as loading IN
with the same --dtype/--scope.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ..dit import fp8
from ..weights.layouts import Recipe
from ..weights.loading import SCALE_BUFFER, read_scale, cast_tensor, dit_targets, prepare_dit
from ..dit.ops import FP8_DTYPES
from ..weights.safetensors_header import ST_DTYPES
from ..weights.safetensors_io import CheckpointIndex, open_checkpoint, write_safetensors_stream
from ..weights.variants import METADATA_KEY, resolve_variant

FORMAT = "dit-fp8"
BF16_FORMAT = "dit-bf16"
OUT_DTYPES = (*FP8_DTYPES, "bf16")
SCALE_NAMING = "<layer>.weight_scale: 0-d fp32, weight = fp8.float() * scale"


def target_scale(ckpt: CheckpointIndex, recipe: Recipe, dtype: torch.dtype) -> torch.Tensor:
    """The scale `cast_tensor(..., scaled=True)` will return, computed without quantizing."""
    parts = recipe.parts
    if all(ST_DTYPES[p.dtype] == dtype for p in parts):
        if len(parts) == 1 and parts[0].scale_key:
            return read_scale(ckpt, parts[0].scale_key)
        if not any(p.scale_key for p in parts):
            return torch.ones((), dtype=torch.float32)
    amax = torch.zeros((), dtype=torch.float32)
    for p in parts:
        data = ckpt.read(p.key)
        scale = read_scale(ckpt, p.scale_key, data.shape) if p.scale_key else None
        if scale is not None or not data.is_floating_point() or fp8.is_fp8(data.dtype):
            data = fp8.dequantize(data, scale, torch.float32)
        amax = torch.maximum(amax, fp8.absmax(data))
    return (amax / torch.finfo(dtype).max).clamp(min=fp8._MIN_SCALE)


def convert(src: str | Path, out: str | Path, weight_dtype: str = "fp8_e4m3fn_scaled", fp8_scope: str = "shared",
            variant: str | None = None) -> Path:
    if weight_dtype not in OUT_DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(OUT_DTYPES)}, got {weight_dtype!r}")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"output must be a .safetensors file, got {out}")
    try:
        known = resolve_variant(variant, src, open_checkpoint(src).metadata)
    except ValueError:
        known = None  # the variant does not change the stored weights
    model, ckpt, plan, report = prepare_dit(src, variant=known or "base", weight_dtype=weight_dtype,
                                            fp8_scope=fp8_scope)
    targets = dit_targets(model)
    specs, scales, scale_of = [], {}, {}
    for key, recipe in plan.recipes.items():
        t = targets[key]
        specs.append((key, t.dtype, t.shape))
        if t.scaled:
            skey = key[:-len("weight")] + SCALE_BUFFER
            specs.append((skey, torch.float32, ()))
            scale_of[skey] = key

    def produce(key: str) -> torch.Tensor:
        if key in scale_of:
            src_key = scale_of[key]
            scales[src_key] = target_scale(ckpt, plan.recipes[src_key], targets[src_key].dtype)
            return scales[src_key]
        t = targets[key]
        tensor, scale = cast_tensor(ckpt, plan.recipes[key], t.dtype, t.scaled, own=False)
        if t.scaled and not torch.equal(scale, scales[key]):
            raise RuntimeError(f"convert_fp8 bug: scale of {key} changed between passes")
        return tensor

    metadata = {"format": "pt", "happyhorse_format": BF16_FORMAT if weight_dtype == "bf16" else FORMAT,
                "weight_dtype": report.weight_dtype,
                "fp8_scope": fp8_scope, "source": Path(src).name, "scale_naming": SCALE_NAMING}
    if known:
        metadata[METADATA_KEY] = known
    return write_safetensors_stream(out, specs, produce, metadata)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m happyhorse_core.tools.convert_fp8", description=__doc__.split("\n")[0])
    ap.add_argument("src", help="input checkpoint: folder, index json or .safetensors file")
    ap.add_argument("out", help="output .safetensors file")
    ap.add_argument("--dtype", default="fp8_e4m3fn_scaled", choices=[d for d in OUT_DTYPES if d != "fp8_e4m3fn_fast"],
                    help="fp8 storage, or bf16 for a merged single file without fp8")
    ap.add_argument("--scope", default="shared", choices=["shared", "all"], help="fp8 layers (ignored for bf16)")
    ap.add_argument("--variant", default=None, choices=["base", "distill", "sr_540p", "sr_1080p"],
                    help="recorded in the metadata (default: from the input's metadata or name, if any)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    try:
        path = convert(args.src, args.out, args.dtype, args.scope, args.variant)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB, {args.dtype}, scope {args.scope}) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
