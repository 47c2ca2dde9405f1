"""Load a HappyHorse/MagiHuman DiT from any published layout into a SandwichDiT.

    model = load_dit("models/diffusion_models/distill", weight_dtype="fp8_e4m3fn_scaled")

The architecture is inferred from tensor shapes (variants.py), the file's key schema is mapped
onto ours (layouts.py), the model is built on the meta device, and every parameter is read,
cast and assigned one tensor at a time from memory-mapped safetensors, so the host never
holds more than the model plus one source tensor (never an fp32 copy of the whole model).

Storage per parameter follows the model's Ops policy: block linears bf16 or fp8 (scope
"shared" = middle layers only, "all" = every block linear), everything in
ops.KEEP_FP32_SUFFIXES fp32. fp8 files: with weight_dtype="bf16" they are dequantized
(fp8.float() * scale -> bf16); with the same fp8 dtype requested the fp8 bytes and scale are
kept (a scaled e4m3fn file asked as plain "fp8_e4m3fn" keeps its scales, i.e. loads as
"fp8_e4m3fn_scaled"); other fp8 requests dequantize and re-quantize. Quanto int8 files are
dequantized at load: int8 weights are never kept.

Files are opened by safetensors_io.open_checkpoint and checked by weights/checks.py (dtypes, keys
and shapes, sampled NaN/Inf), as for the other loaders. `cast_tensor(ckpt, recipe, dtype,
scaled)` (read + dequantize + cast/quantize one tensor) is shared with tools/convert_fp8.py.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..dit import fp8
from ..dit import SandwichDiT
from ..dit.align import ALIGN, align_gemms_, pad_loaded
from ..dit.ops import Ops
from ..errors import CheckpointError
from .checks import assign_tensor, check_dtypes, check_keys_and_shapes
from .layouts import LayoutPlan, Recipe, plan_layout
from .safetensors_header import ST_DTYPES
from .safetensors_io import CheckpointIndex, open_checkpoint
from .variants import apply_variant, infer_config, resolve_variant

log = logging.getLogger("HappyHorse")
OPTIONAL_KEYS = ("adapter.rope.bands",)  # deterministic buffer: recomputed when absent
SCALE_BUFFER = "weight_scale"


@dataclass
class LoadReport:
    source: str
    layout: str
    variant: str
    weight_dtype: str
    fp8_scope: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    dtype: torch.dtype
    shape: tuple[int, ...]
    scaled: bool  # the owning module has a weight_scale buffer


# -- one tensor ------------------------------------------------------------------------------------

def cast_tensor(ckpt: CheckpointIndex, recipe: Recipe, dtype: torch.dtype, scaled: bool = False,
                own: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Build one target tensor from its source parts: (tensor in `dtype`, fp32 scale or None).

    fp8 bytes are kept when the target has the same fp8 dtype and the scale fits (one part,
    or several unscaled parts); anything else goes through dequantize -> cast / quantize.
    A tensor read from the file without conversion aliases a private mapping of the file (one
    mapping per tensor); `own=True` copies it into ordinary memory so the loaded model holds no
    file mappings (pass False when the result is moved to another device anyway).
    """
    w, scale, aliased = _build(ckpt, recipe, dtype, scaled)
    return (w.clone() if own and aliased else w), scale


def _build(ckpt: CheckpointIndex, recipe: Recipe, dtype: torch.dtype,
           scaled: bool) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """(tensor, scale, whether the tensor is the file's memory as read)."""
    parts = recipe.parts
    if fp8.is_fp8(dtype) and all(ST_DTYPES[p.dtype] == dtype for p in parts):
        if len(parts) == 1 and (scaled or not parts[0].scale_key):
            scale = read_scale(ckpt, parts[0].scale_key) if parts[0].scale_key else None
            if scale is None and scaled:
                scale = torch.ones((), dtype=torch.float32)
            return ckpt.read(parts[0].key), scale, True
        if not any(p.scale_key for p in parts):
            return torch.cat([ckpt.read(p.key) for p in parts]), torch.ones(()) if scaled else None, False
    plain = not fp8.is_fp8(dtype)
    pieces = []
    for p in parts:
        data = ckpt.read(p.key)
        scale = read_scale(ckpt, p.scale_key, data.shape) if p.scale_key else None
        if scale is None and (plain or data.is_floating_point() and not fp8.is_fp8(data.dtype)):
            pieces.append(data.to(dtype) if plain else data)  # bf16/fp16/fp32 source: direct cast
        else:
            pieces.append(fp8.dequantize(data, scale, dtype if plain else torch.float32))
        del data
    aliased = len(parts) == 1 and ST_DTYPES[parts[0].dtype] == dtype and not parts[0].scale_key
    w = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    del pieces
    if plain:
        return w, None, aliased
    q, scale = fp8.quantize(w, dtype, scaled)
    return q, scale, False


def read_scale(ckpt: CheckpointIndex, key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    s = ckpt.read(key).float()
    if s.numel() != 1 and (shape is None or s.ndim != len(shape) or s.shape[0] != shape[0]):
        raise CheckpointError(f"{ckpt.root}: scale {key!r} has shape {list(s.shape)}; expected a scalar "
                              f"{'(fp8 per-tensor scale)' if shape is None else 'or one value per row'}.")
    return s.reshape(()) if s.numel() == 1 else s


# -- the DiT loader ------------------------------------------------------------------------------

def load_dit(path: str | Path, *, variant: str | None = None, weight_dtype: str = "bf16", fp8_scope: str = "shared",
             device: str | torch.device = "cpu", compute_dtype: torch.dtype = torch.bfloat16,
             attn_backend: str = "sdpa", fp8_matmul: bool = False, align: int = ALIGN,
             interrupt: Callable[[], None] | None = None) -> SandwichDiT:
    """Load any accepted DiT layout (module docstring, WEIGHT_LAYOUTS.md) into an eval SandwichDiT.

    variant: base / distill / sr_540p / sr_1080p; None = from file metadata or name, else ValueError.
        All four share one architecture, so e.g. a base/distill file loaded as sr_1080p is accepted
        and simply runs with the SR settings (v1 coords, windowed layers).
    weight_dtype: bf16, fp8_e4m3fn, fp8_e4m3fn_scaled, fp8_e5m2; fp8_scope: shared or all.
    align: zero-pad the MLP width to a multiple of this (dit/align.py: fast GEMM kernels, the same
        outputs; state_dict() keeps the published shapes); 0 or 1 = no padding.
    `model.load_report` (LoadReport) says what was detected and done.
    interrupt: raises to stop (ComfyUI's Cancel); called before every tensor read.
    """
    start = time.perf_counter()
    model, ckpt, plan, report = prepare_dit(path, variant=variant, weight_dtype=weight_dtype, fp8_scope=fp8_scope,
                                            compute_dtype=compute_dtype, attn_backend=attn_backend,
                                            fp8_matmul=fp8_matmul)
    device = torch.device(device)
    if align > 1:  # padded shapes on the meta model; each tensor is padded as it arrives (no second copy)
        align_gemms_(model, align)
    targets = dit_targets(model)
    for key, recipe in plan.recipes.items():
        if interrupt is not None:
            interrupt()
        t = targets[key]
        owner_name, _, name = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        # a padded weight is copied by pad_loaded anyway: own (clone) only what would stay the file's memory
        own = device.type == "cpu" and getattr(owner, "published", None) is None
        tensor, scale = cast_tensor(ckpt, recipe, t.dtype, t.scaled, own=own)
        assign_tensor(model, key, pad_loaded(owner, name, tensor).to(device))
        if t.scaled:
            scale = pad_loaded(owner, SCALE_BUFFER, scale.to(dtype=torch.float32))
            assign_tensor(model, key[:-len("weight")] + SCALE_BUFFER, scale.to(device=device))
    _finish(model, device)
    report.seconds = time.perf_counter() - start
    model.load_report = report
    log.info("HappyHorse: loaded %s DiT from %s (%s) as %s in %.1f s", report.variant, report.source, report.layout,
             report.weight_dtype, report.seconds)
    return model


def prepare_dit(path: str | Path, *, variant: str | None = None, weight_dtype: str = "bf16",
                fp8_scope: str = "shared", compute_dtype: torch.dtype = torch.bfloat16, attn_backend: str = "sdpa",
                fp8_matmul: bool = False) -> tuple[SandwichDiT, CheckpointIndex, LayoutPlan, LoadReport]:
    """Everything before the data: open + check the files, map keys, infer the config, build the
    model on the meta device and check keys and shapes strictly. Used by load_dit and convert_fp8."""
    Ops(weight_dtype=weight_dtype, fp8_scope=fp8_scope)  # validates both before any file work
    ckpt = open_checkpoint(path)
    plan = plan_layout(ckpt)
    layout = plan.describe(ckpt)
    cfg = infer_config({k: r.shape for k, r in plan.recipes.items()}, where=f"{ckpt.root} ({layout})")
    variant = resolve_variant(variant, ckpt.root, ckpt.metadata)
    notes = []
    if weight_dtype == "fp8_e4m3fn" and "F8_E4M3" in plan.fp8_dtypes and plan.scale_namings:
        weight_dtype = "fp8_e4m3fn_scaled"
        notes.append("file holds scaled fp8_e4m3fn weights: kept with their scales (fp8_e4m3fn_scaled)")
    ops = Ops(weight_dtype=weight_dtype, fp8_scope=fp8_scope, compute_dtype=compute_dtype, device="meta",
              fp8_matmul=fp8_matmul)
    model = SandwichDiT(apply_variant(cfg, variant), ops, attn_backend)
    model.ops = dataclasses.replace(ops, device=None)
    targets = dit_targets(model)
    check_dtypes({p.key: p.dtype for r in plan.recipes.values() for p in r.parts}, ckpt.root, "DiT",
                 allowed=[p.key for r in plan.recipes.values() for p in r.parts if p.dtype == "I8" and p.scale_key])
    stray = [p.key for k, r in plan.recipes.items() if k not in targets for p in r.parts]  # by file key
    mapped = {k: r.shape for k, r in plan.recipes.items() if k in targets}
    check_keys_and_shapes({k: t.shape for k, t in targets.items()}, mapped, source=ckpt.root,
                          what="the expected weights", allow_missing=OPTIONAL_KEYS + plan.incomplete,
                          extra_missing=plan.missing_sources, unexpected_names=plan.unexpected + stray,
                          hint=f"Detected layout: {layout}. Check that the file is complete and is the right model.")
    for note in notes:
        log.info("HappyHorse: %s", note)
    report = LoadReport(str(ckpt.root), layout, variant, weight_dtype, fp8_scope, notes=notes)
    return model, ckpt, plan, report


def dit_targets(model: nn.Module) -> dict[str, Target]:
    """Canonical key -> storage target for every parameter/buffer a checkpoint provides."""
    out: dict[str, Target] = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if name.endswith("." + SCALE_BUFFER):
            continue
        owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        scaled = getattr(owner, SCALE_BUFFER, None) is not None and name.endswith(".weight")
        out[name] = Target(t.dtype, tuple(t.shape), scaled)
    return out


def _finish(model: SandwichDiT, device: torch.device) -> None:
    rope = model.adapter.rope
    rope.bands = rope.bands.to(device=device, dtype=torch.float32)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"HappyHorse loader bug: tensors left unassigned: {left[:10]}")
    model.eval()
