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
