"""Test-only reference forms (oracles): the plain math the optimised model code is checked against.

They live here, not in happyhorse_core/, because nothing but the tests runs them.
"""
from __future__ import annotations

import math

import torch

from happyhorse_core.dit.rowwise import CLAMP


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention in fp32. q [Lq, Hq, d], k/v [Lk, Hkv, d]; mask [Lq, Lk] bool, True = may attend."""
    group = q.shape[1] // k.shape[1]
    kf = k.float().repeat_interleave(group, dim=1)
    vf = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), kf) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), vf).to(q.dtype)


def attention_atol(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> float:
    """Absolute tolerance for two fp32 softmax-attention computations that may sum in different orders.

    Each logit is a head_dim-long dot product: its fp32 rounding error, in any summation order, is at most
    head_dim * eps * sum_i |q_i k_i| * scale. A logit error dL moves each output by at most 2 * dL * max|v|
    (softmax weights sum to 1). q [Lq, Hq, d], k/v [Lk, Hkv, d] (GQA: Hq a multiple of Hkv). The bound does
    not depend on the CPU's kernels (AMX, AVX-512, AVX2 all fit inside it).
    """
    d = q.shape[-1]
    scale = d ** -0.5 if scale is None else scale
    group = q.shape[1] // k.shape[1]
    kabs = k.abs().float().repeat_interleave(group, dim=1)
    dots = torch.einsum("qhd,khd->hqk", q.abs().float(), kabs) * scale  # sum_i |q_i k_i| * scale
    return float(2 * d * torch.finfo(torch.float32).eps * dots.max() * v.abs().max())


def gelu7(x: torch.Tensor) -> torch.Tensor:
    """Non-gated GELU7 (layers 0-3): c * sigmoid(1.702 c) with c = min(x, 7); the model runs rowwise.gelu7_to."""
    c = x.clamp(max=CLAMP)
    return c * torch.sigmoid(1.702 * c)


def swiglu7(x: torch.Tensor) -> torch.Tensor:
    """Interleaved SwiGLU7: even columns gate a, odd columns linear b; a*sigmoid(1.702a)*(b + 1).

    The model runs rowwise.swiglu7_to."""
    a = x[..., 0::2].clamp(max=CLAMP)
    b = x[..., 1::2].clamp(min=-CLAMP, max=CLAMP)
    return a * torch.sigmoid(1.702 * a) * (b + 1)
