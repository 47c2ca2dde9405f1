"""Aligned GEMMs: zero-pad GEMM widths at load time to a multiple of 16.

The SwiGLU7 width of the real model is int(5120 * 8/3) // 4 * 4 = 13652, which is not a multiple
of 8. down_proj then has K = 13652 and cuBLAS falls back to a slow kernel (bench/RESULTS.md §7:
2.59 ms instead of 0.70 ms per call on an H100), and `torch._scaled_mm` (fp8 matmul) refuses it.
Padding to 13664 fixes both and changes no output:

* up_gate_proj gets, per expert, `pad` extra interleaved (a, b) row pairs of zeros, so the extra
  activation columns are exactly a = b = 0 and SwiGLU7(0, 0) = 0 * sigmoid(0) * (0 + 1) = +0
  (GELU7 layers: one zero row per extra column, GELU7(0) = +0);
* down_proj gets `pad` extra zero columns, so every extra product is 0 * 0 = +0, and adding +0 to
  a float sum leaves it unchanged.

linear_qkv's rows (q | k | v | gate = 7208 per expert) are padded the same way; the padded output
columns are never read (the gate slice stops at its heads), so fp8 `torch._scaled_mm`, which needs
N % 16 == 0, takes that projection too.

fp8 weights pad with fp8 zeros and keep their per-tensor scale (max |w| is unchanged). The padded
tensors are what the model holds and computes with; `state_dict()` trims them back to the
published shapes and `load_state_dict()` accepts either, so checkpoints, manifests and key checks
never see the padding.

The loader pads on the meta model before any data is read (`align_gemms_` on a meta model only
changes shapes) and then pads each tensor as it arrives (`pad_loaded`), so no linear ever exists
twice. `align_gemms_` on a loaded model pads in place (tests, benches).
"""
from __future__ import annotations

import torch
from torch import nn

ALIGN = 16  # fp8 tensor-core matmuls need multiples of 16; bf16 cuBLAS is happy from 8


def padded_width(n: int, multiple: int = ALIGN) -> int:
    return -(-n // multiple) * multiple


def _pad_rows(w: torch.Tensor, experts: int, rows: int, new_rows: int, fill: float = 0.0) -> torch.Tensor:
    """[E*rows, ...] -> [E*new_rows, ...]: rows of `fill` appended to every expert's block."""
    out = torch.full((experts, new_rows, *w.shape[1:]), fill, dtype=w.dtype, device=w.device)
    out[:, :rows] = w.view(experts, rows, *w.shape[1:])
    return out.view(experts * new_rows, *w.shape[1:])


def _pad_weight(w: torch.Tensor, experts: int, rows: int, new_rows: int, cols: int) -> torch.Tensor:
    """[E*rows, K] -> [E*new_rows, cols]: zero rows appended to every expert's block and zero columns
    to every row, in one allocation and one copy (this runs per tensor at load and per fetched weight)."""
    out = torch.zeros(experts, new_rows, cols, dtype=w.dtype, device=w.device)
    out[:, :rows, :w.shape[1]] = w.view(experts, rows, w.shape[1])
    return out.view(experts * new_rows, cols)


def _trim(lin: nn.Module, state: dict, prefix: str, *_) -> None:
    """state_dict hook: the published [E*out, in] shapes (and per-row scales)."""
    e, (out, inp) = lin.experts, lin.published
    for name in ("weight", "weight_scale"):
        t = state.get(prefix + name)
        if t is None or t.ndim == 0:
            continue
        t = t.view(e, -1, *t.shape[1:])[:, :out].reshape(e * out, *t.shape[1:])
        state[prefix + name] = t[:, :inp] if name == "weight" else t


def _pad_in(lin: nn.Module, state: dict, prefix: str, *_) -> None:
    """load_state_dict pre-hook: pad tensors that come with the published shapes (as the loader does)."""
    for name in ("weight", "weight_scale"):
        if prefix + name in state:
            state[prefix + name] = pad_loaded(lin, name, state[prefix + name])


def to_published(lin: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """A padded weight [E*out_features, in_features] -> the published [E*out, in] (a copy); others as they are.

    Weight patches (LoRA) are keyed and shaped by the published layout, so hosts apply them to this."""
    published = getattr(lin, "published", None)
    if published is None or tuple(w.shape) != (lin.experts * lin.out_features, lin.in_features):
        return w
    e, (out, inp) = lin.experts, published
    return w.view(e, -1, w.shape[1])[:, :out, :inp].reshape(e * out, inp).clone()


def to_padded(lin: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """The inverse of to_published: zero rows/columns appended where align_gemms_ put them."""
    published = getattr(lin, "published", None)
    if published is None or tuple(w.shape) != (lin.experts * published[0], published[1]):
        return w
    return _pad_weight(w, lin.experts, published[0], lin.out_features, lin.in_features)


def pad_linear_(lin: nn.Module, out_features: int, in_features: int) -> bool:
    """Zero-pad an ExpertLinear in place to [E*out_features, in_features]; False if nothing to do.

    On a meta linear only the shapes change (the loader then fills it through pad_loaded)."""
    if out_features <= lin.out_features and in_features <= lin.in_features:
        return False
    if not hasattr(lin, "published"):
        lin.published = (lin.out_features, lin.in_features)
        lin._register_state_dict_hook(lambda mod, state, prefix, meta: _trim(mod, state, prefix))
        lin._register_load_state_dict_pre_hook(lambda state, prefix, *a, mod=lin: _pad_in(mod, state, prefix))
    e, rows = lin.experts, lin.out_features
    out_features, in_features = max(out_features, rows), max(in_features, lin.in_features)
    if lin.weight.is_meta:
        w = torch.empty(e * out_features, in_features, dtype=lin.weight.dtype, device="meta")
    else:
        w = _pad_weight(lin.weight, e, rows, out_features, in_features)
    lin._parameters["weight"] = nn.Parameter(w, requires_grad=False)
    scale = getattr(lin, "weight_scale", None)
    if scale is not None and scale.ndim and scale.shape[0] == e * rows:  # per-row scales pad with 1
        lin._buffers["weight_scale"] = _pad_rows(scale, e, rows, out_features, fill=1.0)
    lin.out_features, lin.in_features = out_features, in_features
    return True


def pad_loaded(owner: nn.Module, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A tensor read for `owner.<name>` in its published shape -> the shape align_gemms_ gave the
    (meta) owner: the weight [E*out, in] -> [E*out_features, in_features] with zeros, a per-row
    weight_scale [E*out] -> [E*out_features] with ones. Anything else is returned as it is."""
    published = getattr(owner, "published", None)
    if published is None:
        return tensor
    if name == "weight":
        return to_padded(owner, tensor)
    if name == "weight_scale" and tensor.ndim and tensor.shape[0] == owner.experts * published[0]:
        return _pad_rows(tensor, owner.experts, published[0], owner.out_features, fill=1.0)
    return tensor


def align_gemms_(model: nn.Module, multiple: int = ALIGN) -> int:
    """Zero-pad every MLP width and linear_qkv row count of `model` in place to a multiple of
    `multiple`; returns the number of linears padded. Idempotent. On a meta model only the shapes
    change: load each tensor through pad_loaded afterwards (weights/loading.py does)."""
    from .block import Attention
    from .layers import MLP
    count = 0
    for module in model.modules():
        if isinstance(module, MLP):
            inner = padded_width(module.down_proj.in_features, multiple)
            per_col = 1 if module.gelu else 2  # SwiGLU rows are interleaved (a, b) pairs
            count += pad_linear_(module.up_gate_proj, per_col * inner, module.up_gate_proj.in_features)
            count += pad_linear_(module.down_proj, module.down_proj.out_features, inner)
        elif isinstance(module, Attention):
            qkv = module.linear_qkv
            count += pad_linear_(qkv, padded_width(qkv.out_features, multiple), qkv.in_features)
    return count
