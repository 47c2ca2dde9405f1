"""One attention dispatcher for the whole pack.

Every backend has the same signature: q [L, Hq, D], k/v [L, Hkv, D] (GQA: query head h uses kv
head h // (Hq/Hkv)), non-causal, scale 1/sqrt(D); returns [L, Hq, D] in q's dtype.

`sdpa` (PyTorch scaled_dot_product_attention) is the default and works everywhere, CPU
included. `flash` (flash-attn 2/3) and `sage` (sageattention) are optional: imported lazily,
and if one is asked for but cannot run, we warn once and fall back to SDPA.
"""
from __future__ import annotations

import importlib
import logging
import math
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


HALF_DTYPES = (torch.float16, torch.bfloat16)  # what flash-attn and sage kernels take


def _usable(name: str, device: torch.device, dtype: torch.dtype | None = None) -> str | None:
    """None if backend `name` can run on `device` with q/k/v of `dtype` (None: not known), else why not."""
    if name == "sdpa":
        return None
    if device.type != "cuda":
        return f"it needs a CUDA device (tensors are on {device.type})"
    if dtype is not None and dtype not in HALF_DTYPES:
        return f"it takes fp16/bf16 inputs only (attention runs in {str(dtype).replace('torch.', '')})"
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

    `dtype` is the dtype q/k/v have in attention (the model's compute dtype): `auto` only picks
    flash-attn for fp16/bf16, so an fp32 run (parity checks) stays on exact SDPA.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {BACKENDS}")
    device = torch.device(device)
    if name == "auto":
        return "flash" if _usable("flash", device, dtype) is None else "sdpa"
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


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, num_video: int, tokens_per_frame: int,
                    window: int, backend: str = "sdpa") -> torch.Tensor:
    """1080p-SR windowed attention (MODEL_SPEC §4.6).

    Video queries of latent frame i see video keys of frames |i - j| <= window plus every audio
    and text key; audio and text queries see every key. Computed frame by frame with exact
    softmax over the allowed keys, so it equals a dense masked softmax.
    """
    frames = num_video // tokens_per_frame
    out = torch.empty_like(q)
    k_ctx, v_ctx = k[num_video:], v[num_video:]  # audio + text keys, seen by every query
    for i in range(frames):
        lo, hi = max(0, i - window) * tokens_per_frame, min(frames, i + window + 1) * tokens_per_frame
        rows = slice(i * tokens_per_frame, (i + 1) * tokens_per_frame)
        kk = torch.cat([k[lo:hi], k_ctx], dim=0)
        vv = torch.cat([v[lo:hi], v_ctx], dim=0)
        out[rows] = attention(q[rows], kk, vv, backend)
    if q.shape[0] > num_video:
        out[num_video:] = attention(q[num_video:], k, v, backend)
    return out


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reference softmax attention in fp32 (tests only). mask [Lq, Lk] bool, True = may attend."""
    group = q.shape[1] // k.shape[1]
    kf = k.float().repeat_interleave(group, dim=1)
    vf = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), kf) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), vf).to(q.dtype)
