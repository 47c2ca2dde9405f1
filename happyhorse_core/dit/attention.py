"""One attention dispatcher for the whole pack.

Every backend has the same signature: q [L, Hq, D], k/v [L, Hkv, D] (GQA: query head h uses kv
head h // (Hq/Hkv)), non-causal, scale 1/sqrt(D); returns [L, Hq, D] in q's dtype.

`sdpa` (PyTorch scaled_dot_product_attention) is the default and works everywhere, CPU
included. `flash` (flash-attn 2/3) and `sage` (sageattention) are optional: imported lazily,
and if one is asked for but cannot run, we warn once and fall back to SDPA. The windowed 1080p-SR
layers have their own schedule in local_attention.py.
"""
from __future__ import annotations

import importlib
import logging
from typing import Callable

import torch
import torch.nn.functional as F

log = logging.getLogger("HappyHorse")

AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
BACKENDS = ("auto", "sdpa", "flash", "sage")
_INSTALL_HINT = {"flash": "pip install flash-attn (CUDA only)", "sage": "pip install sageattention (CUDA only)"}
_warned: set[str] = set()


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # [L, H, D] -> [1, H, L, D]; GQA handled natively by SDPA.
    # On CPU, half-precision inputs are upcast: CPU kernels gain nothing from bf16 and the fp32
    # softmax matches the reference numerics (fp32 attention on bf16-rounded q/k/v).
    work = torch.float32 if q.device.type == "cpu" else q.dtype
    qh, kh, vh = (t.to(work).transpose(0, 1).unsqueeze(0) for t in (q, k, v))
    gqa = q.shape[1] != k.shape[1]
    out = F.scaled_dot_product_attention(qh, kh, vh, enable_gqa=gqa)
    return out.squeeze(0).transpose(0, 1).to(q.dtype)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    fa = _import_first("flash_attn_interface", "flash_attn")
    out = fa.flash_attn_func(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), causal=False)
    out = out[0] if isinstance(out, tuple) else out
    return out.squeeze(0)


def _sage(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    sage = importlib.import_module("sageattention")
    out = sage.sageattn(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), tensor_layout="NHD", is_causal=False)
    return out.squeeze(0)


def _import_first(*names: str):
    last: Exception | None = None
    for name in names:
        try:
            return importlib.import_module(name)
        except Exception as e:  # ImportError or a broken CUDA extension
            last = e
    raise ImportError(str(last))


HALF_DTYPES = (torch.float16, torch.bfloat16)


def _usable(name: str, device: torch.device, dtype: torch.dtype | None = None) -> str | None:
    """None if backend `name` can run on `device` with `dtype` inputs, else the reason it cannot."""
    if name == "sdpa":
        return None
    if device.type != "cuda":
        return f"it needs a CUDA device (tensors are on {device.type})"
    if dtype is not None and dtype not in HALF_DTYPES:
        return f"it only takes fp16/bf16 inputs (this model computes in {str(dtype).removeprefix('torch.')})"
    try:
        if name == "flash":
            _import_first("flash_attn_interface", "flash_attn")
        else:
            importlib.import_module("sageattention")
    except ImportError as e:
        return f"it is not installed ({e}); {_INSTALL_HINT[name]}"
    return None


def resolve_backend(name: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> str:
    """Map a requested backend to the one that will actually run (warning once on fallback).

    `auto` = flash-attn when it is installed, the device is CUDA and the inputs are fp16/bf16 (it
    never picks flash or sage for fp32 inputs, which neither supports), else SDPA. Sage is only
    used when asked for by name (the ComfyUI nodes ask for it under --use-sage-attention): it
    quantizes q/k to int8, a numerics change the user opts into. `dtype` None = not checked.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {BACKENDS}")
    device = torch.device(device)
    if name == "auto":
        return "flash" if _usable("flash", device, dtype or torch.float32) is None else "sdpa"
    reason = _usable(name, device, dtype)
    if reason is None:
        return name
    key = f"{name}:{device.type}:{dtype}"
    if key not in _warned:
        _warned.add(key)
        log.warning("HappyHorse: attention backend %r cannot run because %s; using PyTorch SDPA instead.", name, reason)
    return "sdpa"


_FUNCS: dict[str, AttnFn] = {"sdpa": _sdpa, "flash": _flash, "sage": _sage}


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Full bidirectional attention. q [L, Hq, D], k/v [L, Hkv, D] -> [L, Hq, D]."""
    return _FUNCS[backend](q, k, v)
