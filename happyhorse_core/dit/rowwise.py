"""Fused, cache-blocked elementwise work of one transformer layer (the "glue" between the matmuls).

Every function here evaluates the same formulas, in the same order and precision, as the plain
formulation it replaces: `ExpertRMSNorm`, `apply_rope`, `gelu7` / `swiglu7`, the gate multiply and
the fp32 residual add of MODEL_SPEC §1.3. Results are bit-identical except where a vectorised
sigmoid handles a block's tail with its scalar path (at most 1 fp32 ulp). What changes is how the
memory is walked:

* on CPU, a pass over a [L, W] fp32 temporary costs about as much as the op itself, and each
  fresh large allocation page-faults. So rows are processed in blocks of ~`CPU_BLOCK_ELEMENTS`
  values: the half-dozen temporaries of one block stay in L2 and only the bf16 input and output
  touch main memory (bench/RESULTS.md has the measurements);
* rows are also split at modality boundaries, so sandwich-layer experts need no gather or cat;
* bf16 inputs are widened without strided reads: the interleaved SwiGLU pair (a, b) is one int32,
  and `a`, `b` in fp32 are that int32 shifted left by 16 / masked to its high half;
* on CUDA (and under torch.compile) a block is the whole segment: kernels are launched once and
  the compiler does the fusing.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .modality import ModalitySplit
from .ops import ExpertRMSNorm
from .rope import apply_rope_

CLAMP = 7.0  # both MLP activations clamp at 7
CPU_BLOCK_ELEMENTS = 1 << 17  # values per thread per block of a [rows, width] pass on CPU (~512 KB fp32)
_HIGH_HALF = -65536  # int32 0xFFFF0000: the bf16 stored in the upper half of an int32


def blocks(split: ModalitySplit | None, experts: int, rows: int, width: int,
           device: torch.device) -> Iterator[tuple[slice, int]]:
    """(row slice, expert index) pairs covering `rows` rows: per modality, then per cache block."""
    if experts == 1 or split is None:
        segments = [(0, rows, 0)]
    else:
        segments = [(*split.bounds(m), m) for m in range(3) if split.counts[m] > 0]
    step = _block_rows(width, device)
    for start, stop, m in segments:
        if step is None:  # one block per segment; no range() over sizes that may be symbolic
            yield slice(start, stop), m
            continue
        for lo in range(start, stop, step):
            yield slice(lo, min(lo + step, stop)), m


def _block_rows(width: int, device: torch.device) -> int | None:
    """Rows per block, or None for whole segments (CUDA, torch.compile)."""
    if device.type != "cpu" or torch.compiler.is_compiling():
        return None
    # each op splits a block over the intra-op threads: the per-core share is what must fit in L2
    return max(1, CPU_BLOCK_ELEMENTS * max(1, torch.get_num_threads()) // max(width, 1))


def _norm_block(x: torch.Tensor, scale: torch.Tensor, eps: float, inplace: bool = False) -> torch.Tensor:
    """ExpertRMSNorm._norm on fp32 rows: x * rsqrt(mean(x²) + eps) * scale; in place on x if asked."""
    rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    y = x.mul_(rstd) if inplace else x * rstd
    return y.mul_(scale)


def rms_norm(norm: ExpertRMSNorm, h: torch.Tensor, split: ModalitySplit | None,
             dtype: torch.dtype) -> torch.Tensor:
    """norm(h).to(dtype) for fp32 h [L, D], without an fp32 [L, D] temporary or an expert cat."""
    out = torch.empty(h.shape, dtype=dtype, device=h.device)
    f = norm.fetch(h.device)  # the norm's weight, read once (fetch step, happyhorse_core/fetch.py)
    for rows, m in blocks(split, norm.experts, h.shape[0], h.shape[-1], h.device):
        out[rows] = _norm_block(h[rows].float(), norm.offset(f.weight, m), norm.eps)
    norm.release(f)
    return out


def add_rms_norm_(h: torch.Tensor, delta: torch.Tensor, norm: ExpertRMSNorm, split: ModalitySplit | None,
                  dtype: torch.dtype) -> torch.Tensor:
    """h += delta (fp32 residual, delta of any float dtype) in place, then return rms_norm(h) in dtype."""
    out = torch.empty(h.shape, dtype=dtype, device=h.device)
    f = norm.fetch(h.device)
    for rows, m in blocks(split, norm.experts, h.shape[0], h.shape[-1], h.device):
        hr = h[rows]
        hr += delta[rows].float()
        out[rows] = _norm_block(hr, norm.offset(f.weight, m), norm.eps)
    norm.release(f)
    return out


def add_(h: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """h += delta.float() in place, blockwise (a mixed-dtype in-place add is slow on CPU)."""
    for rows, _ in blocks(None, 1, h.shape[0], h.shape[-1], h.device):
        h[rows] += delta[rows].float()
    return h


def qk_norm_rope(qkvg: torch.Tensor, heads: tuple[int, int, int], q_norm: ExpertRMSNorm, k_norm: ExpertRMSNorm,
                 rope: torch.Tensor, split: ModalitySplit, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k of the fused projection, per-head RMS-normed and rotated in fp32, returned in dtype.

    qkvg [L, (Hq + 2 Hkv) Dh + Hq] (any float dtype; its q|k columns come first), heads = (Hq, Hkv, Dh),
    rope [L, 6B] -> q [L, Hq, Dh], k [L, Hkv, Dh].
    """
    hq, hkv, dh = heads
    L, width = qkvg.shape[0], (hq + hkv) * dh
    q = torch.empty(L, hq, dh, dtype=dtype, device=qkvg.device)
    k = torch.empty(L, hkv, dh, dtype=dtype, device=qkvg.device)
    fq, fk = q_norm.fetch(qkvg.device), k_norm.fetch(qkvg.device)
    for rows, m in blocks(split, q_norm.experts, L, width, qkvg.device):
        qk = qkvg[rows, :width].to(torch.float32, copy=True).view(-1, hq + hkv, dh)  # owned fp32 temp
        _norm_block(qk[:, :hq], q_norm.offset(fq.weight, m), q_norm.eps, inplace=True)
        _norm_block(qk[:, hq:], k_norm.offset(fk.weight, m), k_norm.eps, inplace=True)
        apply_rope_(qk, rope[rows])
        q[rows] = qk[:, :hq]
        k[rows] = qk[:, hq:]
    q_norm.release(fq)
    k_norm.release(fk)
    return q, k


def gate_(out: torch.Tensor, gate: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(out * sigmoid(gate)) in fp32, returned as [L, H*Dh] in dtype. out [L, H, Dh], gate [L, H]."""
    L, H, dh = out.shape
    res = torch.empty(L, H * dh, dtype=dtype, device=out.device)
    for rows, _ in blocks(None, 1, L, H * dh, out.device):
        sig = torch.sigmoid(gate[rows].float()).unsqueeze(-1)  # [n, H, 1]
        res[rows] = (out[rows].float() * sig).reshape(-1, H * dh)  # a view when contiguous
    return res


def swiglu7_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Interleaved SwiGLU7 of x [L, 2I] (bf16 or fp32) computed in fp32 -> [L, I] in dtype."""
    L, inner = x.shape[0], x.shape[1] // 2
    out = torch.empty(L, inner, dtype=dtype, device=x.device)
    packed = x.dtype == torch.bfloat16 and x.stride(-1) == 1 and not torch.compiler.is_compiling()
    for rows, _ in blocks(None, 1, L, 2 * inner, x.device):
        if packed:  # (a, b) bf16 pair = one int32: a in the low half, b in the high half
            pair = x[rows].view(torch.int32)
            a = torch.bitwise_left_shift(pair, 16).view(torch.float32)
            b = torch.bitwise_and(pair, _HIGH_HALF).view(torch.float32)
        else:  # owned fp32 copies of the strided halves
            a = x[rows, 0::2].to(torch.float32, copy=True)
            b = x[rows, 1::2].to(torch.float32, copy=True)
        a.clamp_(max=CLAMP)
        y = torch.mul(a, 1.702).sigmoid_().mul_(a)  # a * sigmoid(1.702 a)
        out[rows] = y.mul_(b.clamp_(-CLAMP, CLAMP).add_(1.0))
    return out


def gelu7_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """GELU7 of x [L, I] (any float dtype) computed in fp32 -> [L, I] in dtype."""
    out = torch.empty(x.shape, dtype=dtype, device=x.device)
    for rows, _ in blocks(None, 1, x.shape[0], x.shape[1], x.device):
        c = x[rows].to(torch.float32, copy=True).clamp_(max=CLAMP)
        out[rows] = torch.mul(c, 1.702).sigmoid_().mul_(c)
    return out
