"""Aligned GEMMs: zero-pad the MLP inner width at load time to a multiple of 16.

The SwiGLU7 width of the real model is int(5120 * 8/3) // 4 * 4 = 13652, which is not a multiple
of 8. down_proj then has K = 13652 and cuBLAS falls back to a slow kernel (bench/RESULTS.md §7:
2.59 ms instead of 0.70 ms per call on an H100), and `torch._scaled_mm` (fp8 matmul) refuses it.
Padding to 13664 fixes both and changes no output:

* up_gate_proj gets, per expert, `pad` extra interleaved (a, b) row pairs of zeros, so the extra
  activation columns are exactly a = b = 0 and SwiGLU7(0, 0) = 0 * sigmoid(0) * (0 + 1) = +0
  (GELU7 layers: one zero row per extra column, GELU7(0) = +0);
* down_proj gets `pad` extra zero columns, so every extra product is 0 * 0 = +0, and adding +0 to
  a float sum leaves it unchanged.

fp8 weights pad with fp8 zeros and keep their per-tensor scale (max |w| is unchanged). The padded
tensors are what the model holds and computes with; `state_dict()` trims them back to the
published shapes and `load_state_dict()` accepts either, so checkpoints, manifests and key checks
never see the padding.
"""
from __future__ import annotations

import torch
from torch import nn

ALIGN = 16  # fp8 tensor-core matmuls need multiples of 16; bf16 cuBLAS is happy from 8


def padded_width(inner: int, multiple: int = ALIGN) -> int:
    return -(-inner // multiple) * multiple


def _pad_rows(w: torch.Tensor, experts: int, rows_per_expert: int, extra: int, fill: float = 0.0) -> torch.Tensor:
    """[E*r, ...] -> [E*(r+extra), ...] with `extra` rows of `fill` appended to every expert's block."""
    blocks = w.view(experts, rows_per_expert, *w.shape[1:])
    out = torch.full((experts, rows_per_expert + extra, *w.shape[1:]), fill, dtype=w.dtype, device=w.device)
    out[:, :rows_per_expert] = blocks
    return out.view(experts * (rows_per_expert + extra), *w.shape[1:])


def _pad_cols(w: torch.Tensor, extra: int) -> torch.Tensor:
    """[R, K] -> [R, K+extra] with zero columns appended."""
    out = torch.zeros(w.shape[0], w.shape[1] + extra, dtype=w.dtype, device=w.device)
    out[:, :w.shape[1]] = w
    return out


def _set(linear: nn.Module, name: str, tensor: torch.Tensor) -> None:
    if name in linear._parameters:
        linear._parameters[name] = nn.Parameter(tensor, requires_grad=False)
    else:
        linear._buffers[name] = tensor


def _pad_up(up: nn.Module, inner: int, extra: int, gelu: bool) -> None:
    """up_gate_proj: rows per expert 2*inner (SwiGLU, interleaved a, b) or inner (GELU)."""
    per_col = 1 if gelu else 2
    rows = per_col * inner
    _set(up, "weight", _pad_rows(up.weight, up.experts, rows, per_col * extra))
    scale = getattr(up, "weight_scale", None)
    if scale is not None and scale.ndim and scale.shape[0] == up.experts * rows:  # per-row scales pad with 1
        _set(up, "weight_scale", _pad_rows(scale, up.experts, rows, per_col * extra, fill=1.0))
    up.out_features = rows + per_col * extra


def _pad_down(down: nn.Module, extra: int) -> None:
    _set(down, "weight", _pad_cols(down.weight, extra))
    down.in_features += extra


def _trim_state(mlp: nn.Module, state: dict, prefix: str, local_metadata) -> None:
    """state_dict hook: give back the published (unpadded) shapes."""
    inner, pad = mlp.inner, mlp.down_proj.in_features - mlp.inner
    if pad == 0:
        return
    up_key, down_key = prefix + "up_gate_proj.weight", prefix + "down_proj.weight"
    per_col = 1 if mlp.gelu else 2
    e = mlp.up_gate_proj.experts
    if up_key in state:
        w = state[up_key]
        state[up_key] = w.view(e, -1, w.shape[-1])[:, :per_col * inner].reshape(-1, w.shape[-1])
    if down_key in state:
        state[down_key] = state[down_key][:, :inner]
    scale_key = prefix + "up_gate_proj.weight_scale"
    if scale_key in state and state[scale_key].ndim:
        s = state[scale_key]
        state[scale_key] = s.view(e, -1, *s.shape[1:])[:, :per_col * inner].reshape(-1, *s.shape[1:])


def _pad_incoming(mlp: nn.Module, state: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: pad tensors that come in with the published shapes."""
    pad = mlp.down_proj.in_features - mlp.inner
    if pad == 0:
        return
    per_col = 1 if mlp.gelu else 2
    e = mlp.up_gate_proj.experts
    up_key, down_key = prefix + "up_gate_proj.weight", prefix + "down_proj.weight"
    if up_key in state and state[up_key].shape[0] == e * per_col * mlp.inner:
        state[up_key] = _pad_rows(state[up_key], e, per_col * mlp.inner, per_col * pad)
    if down_key in state and state[down_key].shape[1] == mlp.inner:
        state[down_key] = _pad_cols(state[down_key], pad)


def align_mlp_(model: nn.Module, multiple: int = ALIGN) -> int:
    """Zero-pad every MLP of `model` (a SandwichDiT) in place; returns how many MLPs were padded.

    Idempotent: an MLP already padded to a multiple of `multiple` is left alone. Call it on a
    model whose weights are loaded (not on the meta device).
    """
    from .layers import MLP
    count = 0
    for mlp in (m for m in model.modules() if isinstance(m, MLP)):
        inner, current = mlp.inner, mlp.down_proj.in_features
        target = padded_width(inner, multiple)
        if current % multiple == 0 or target == current:
            continue
        if mlp.down_proj.weight.is_meta:
            raise ValueError("align_mlp_() needs loaded weights; call it after loading, not on a meta model")
        extra = target - current
        _pad_up(mlp.up_gate_proj, current, extra, mlp.gelu)
        _pad_down(mlp.down_proj, extra)
        if not getattr(mlp, "_align_hooks", False):
            mlp._align_hooks = True
            mlp._register_state_dict_hook(lambda mod, state, prefix, meta: _trim_state(mod, state, prefix, meta))
            mlp._register_load_state_dict_pre_hook(lambda *a, mod=mlp: _pad_incoming(mod, *a))
        count += 1
    return count
