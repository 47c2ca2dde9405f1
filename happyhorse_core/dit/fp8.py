"""fp8 storage helpers: per-tensor quantize / dequantize and the optional fp8 matmul.

Storage formats (all per tensor, one scalar scale for the whole weight, the three stacked
experts of a sandwich layer included):
- plain:  w ≈ q.float()                     (q = clamp(w).to(fp8))
- scaled: w ≈ q.float() * scale, scale = absmax(w) / fp8_max  (448 for e4m3fn)

The forward pass never needs fp8 arithmetic: weights are upcast per matmul to the compute
dtype (`ExpertLinear`), which works on CPU and on any GPU. `scaled_mm_linear` is the optional
fast path through `torch._scaled_mm` for CUDA devices with fp8 tensor cores (sm89+); it
quantizes the activations on the fly (per row on sm90+, per tensor on sm89) and is taken for
the `fp8_e4m3fn_fast` weight dtype (or `Ops.fp8_matmul`). `emulate_scaled_mm()` runs the same
quantization as fp32 math anywhere, which is how its accuracy is measured on CPU.
Work is done in row chunks so that quantizing a 1.7 GB fp32 tensor never holds three fp32
copies of it at once.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

import torch

log = logging.getLogger("HappyHorse")

FP8_TORCH_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
_CHUNK_ROWS = 1024
_MIN_SCALE = 1e-12  # an all-zero tensor gets this scale instead of 0
_warned: set[str] = set()


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in FP8_TORCH_DTYPES


def _row_chunks(rows: int):
    for start in range(0, max(rows, 1), _CHUNK_ROWS):
        yield slice(start, min(start + _CHUNK_ROWS, rows))


def absmax(w: torch.Tensor) -> torch.Tensor:
    """max |w| as a 0-d fp32 tensor, computed chunk by chunk."""
    if w.numel() == 0:
        return torch.zeros((), dtype=torch.float32, device=w.device)
    flat = w.reshape(w.shape[0], -1) if w.ndim else w.reshape(1, 1)
    ends = [torch.aminmax(flat[s]) for s in _row_chunks(flat.shape[0])]  # cheaper than abs().amax()
    return torch.stack([torch.maximum(-lo.float(), hi.float()) for lo, hi in ends]).amax()


def quantize(w: torch.Tensor, dtype: torch.dtype, scaled: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Any float tensor -> (fp8 tensor, 0-d fp32 scale or None). Values beyond the fp8 range clamp."""
    if not is_fp8(dtype):
        raise ValueError(f"quantize() needs an fp8 dtype, got {dtype}")
    fmax = torch.finfo(dtype).max
    scale = (absmax(w) / fmax).clamp(min=_MIN_SCALE) if scaled else None
    out = torch.empty(w.shape, dtype=dtype, device=w.device)
    src = w.reshape(w.shape[0], -1) if w.ndim else w.reshape(1, 1)
    dst = out.view(src.shape)
    for s in _row_chunks(src.shape[0]):
        chunk = src[s].to(torch.float32, copy=True)
        if scale is not None:
            chunk.div_(scale)
        dst[s] = chunk.clamp_(-fmax, fmax).to(dtype)
    return out, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """(stored tensor, optional scale broadcastable to it) -> `dtype`, via fp32: q.float() * scale.

    Works for fp8 and for quanto-style int8 with a per-row scale [out, 1].
    """
    if scale is None:
        return q.to(dtype)
    out = torch.empty(q.shape, dtype=dtype, device=q.device)
    if q.ndim == 0 or scale.numel() == 1:
        s_full = scale.float().reshape(())
        src = q.reshape(q.shape[0], -1) if q.ndim else q.reshape(1, 1)
        dst = out.view(src.shape)
        for s in _row_chunks(src.shape[0]):
            dst[s] = src[s].to(torch.float32, copy=True).mul_(s_full).to(dtype)
        return out
    if scale.ndim != q.ndim or scale.shape[0] not in (1, q.shape[0]) or any(n != 1 for n in scale.shape[1:]):
        raise ValueError(f"scale of shape {list(scale.shape)} does not broadcast per row over a weight of shape "
                         f"{list(q.shape)}")
    for s in _row_chunks(q.shape[0]):
        sc = scale[s] if scale.shape[0] == q.shape[0] else scale
        out[s] = (q[s].float() * sc.float()).to(dtype)
    return out


# -- optional fp8 tensor-core matmul -----------------------------------------------------------

_emulation: dict = {}  # set by emulate_scaled_mm(): {"rowwise": bool}


def scaled_mm_supported(device: torch.device) -> bool:
    """True on CUDA devices with compute capability >= 8.9 and a torch that has _scaled_mm."""
    if device.type != "cuda" or not hasattr(torch, "_scaled_mm"):
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def rowwise_supported(device: torch.device) -> bool:
    """Per-row activation scales need sm90+ (Hopper); Ada (sm89) takes one scale per tensor."""
    return scaled_mm_supported(device) and torch.cuda.get_device_capability(device) >= (9, 0)


@contextmanager
def emulate_scaled_mm(rowwise: bool = True):
    """Run `scaled_mm_linear` on any device as fp32 math with the SAME quantization as the fp8
    kernel: activations rounded to e4m3fn with per-row (or per-tensor) scales, weights as stored.
    Used to measure the fp8-matmul error on CPU (tests, accuracy tables)."""
    _emulation["rowwise"] = rowwise
    try:
        yield
    finally:
        _emulation.clear()


def quantize_activations(x: torch.Tensor, rowwise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (e4m3fn [M, K], fp32 scale [M, 1] if rowwise else 0-d); x ≈ q.float() * scale."""
    fmax = torch.finfo(torch.float8_e4m3fn).max
    xf = x.float()
    amax = xf.abs().amax(dim=1, keepdim=True) if rowwise else xf.abs().amax()
    scale = (amax / fmax).clamp(min=_MIN_SCALE)
    return (xf / scale).clamp_(-fmax, fmax).to(torch.float8_e4m3fn), scale


def _emulated(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor | None, out_dtype: torch.dtype,
              rowwise: bool) -> torch.Tensor:
    xq, xs = quantize_activations(x, rowwise)
    wf = w.float() if w_scale is None else w.float() * w_scale.float()
    return ((xq.float() * xs) @ wf.t()).to(out_dtype)  # fp32 accumulation, like the kernel


def scaled_mm_linear(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor | None,
                     out_dtype: torch.dtype) -> torch.Tensor | None:
    """x [L, in] @ w[out, in].T with fp8 tensor cores, or None if this shape/device cannot.

    Activations are quantized on the fly to e4m3fn: one scale per row on sm90+ (one per tensor on
    sm89), absmax / 448. Returns None (the caller then upcasts the weight instead) for e5m2
    weights, dims that are not multiples of 16 (dit/align.py pads the model's), or when the kernel
    raises; that fallback is logged once. Under `emulate_scaled_mm()` the same quantization runs
    as fp32 math on any device.
    """
    if w.dtype != torch.float8_e4m3fn:
        return None
    if _emulation:
        return _emulated(x, w, w_scale, out_dtype, _emulation["rowwise"])
    if "scaled_mm" in _warned or not scaled_mm_supported(x.device):
        return None  # after one failure the upcast path is used for the rest of the session
    if w.shape[0] % 16 or w.shape[1] % 16:
        return None
    rowwise = rowwise_supported(x.device) and "rowwise" not in _warned and out_dtype == torch.bfloat16
    out = _run_scaled_mm(x, w, w_scale, out_dtype, rowwise)
    if out is None and rowwise:
        _warned.add("rowwise")
        out = _run_scaled_mm(x, w, w_scale, out_dtype, False)
    return out


def _run_scaled_mm(x, w, w_scale, out_dtype, rowwise: bool) -> torch.Tensor | None:
    rows = x.shape[0]
    pad = (-rows) % 16
    xq, xs = quantize_activations(x, rowwise)
    ws = (w_scale if w_scale is not None else torch.ones((), device=x.device)).float().reshape(())
    if pad:
        xq = torch.cat([xq, xq.new_zeros(pad, xq.shape[1])])
        if rowwise:
            xs = torch.cat([xs, xs.new_ones(pad, 1)])
    if rowwise:
        scale_a, scale_b = xs, ws.expand(1, w.shape[0]).contiguous()  # [M, 1], [1, N]
    else:
        scale_a, scale_b = xs.reshape(()), ws
    try:
        out = torch._scaled_mm(xq, w.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=out_dtype)
    except (RuntimeError, TypeError) as e:
        if not rowwise and "scaled_mm" not in _warned:
            _warned.add("scaled_mm")
            log.warning("HappyHorse: torch._scaled_mm failed (%s); fp8 weights are upcast per matmul instead", e)
        return None
    out = out[0] if isinstance(out, tuple) else out
    return out[:rows]
