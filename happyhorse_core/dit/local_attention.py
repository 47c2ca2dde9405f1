"""Windowed attention of the 1080p SR layers without copying keys (MODEL_SPEC §4.6).

Video queries of latent frame i see the video keys of frames |i - j| <= window plus every audio
and text key; audio and text queries see every key. Two exact ways to compute that, neither of
which concatenates the window keys per frame:

* `flex`: one FlexAttention call with a block mask (CUDA; the kernel skips the masked-out key
  blocks). The mask is built once per sequence shape and cached.
* `banded`: per band of query frames, one attention over the contiguous video keys of the band's
  window and one over the audio + text keys (both are plain slices, no copies), each returning its
  log-sum-exp, merged exactly: with m = max(lse1, lse2), w_i = exp(lse_i - m),
  out = (w1 o1 + w2 o2) / (w1 + w2). The video queries' audio + text part is computed once for
  all frames. Works on any device (CPU: PyTorch's fused CPU attention with LSE).

Both equal a dense masked softmax up to fp32 rounding: the merge changes the summation order and
adds two exp/divide roundings per output, i.e. a few 2^-24 relative to max |v|.

Shapes everywhere: q [L, Hq, D], k/v [L, Hkv, D] (GQA: query head h uses kv head h // (Hq/Hkv)).
The whole function runs outside torch.compile graphs (`torch.compiler.disable`): its work is a
few large attention kernels, so compiling it gains nothing, and keeping the per-frame Python
loop out of the graph keeps compiled SR graphs small and independent of the clip length.
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict

import torch

log = logging.getLogger("HappyHorse")

METHODS = ("auto", "flex", "banded")
_masks: "OrderedDict[tuple, object]" = OrderedDict()
_compiled_flex = None
_warned: set[str] = set()


# -- attention with log-sum-exp ------------------------------------------------------------------

def _fold_heads(q: torch.Tensor, hkv: int) -> torch.Tensor:
    """q [L, Hq, D] -> [1, Hkv, G*L, D]: each kv head's G query heads become extra query rows."""
    L, hq, d = q.shape
    g = hq // hkv
    return q.reshape(L, hkv, g, d).permute(1, 2, 0, 3).reshape(1, hkv, g * L, d)


def _unfold(out: torch.Tensor, lse: torch.Tensor, L: int, hq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, Hkv, G*L, D], [1, Hkv, G*L] -> [L, Hq, D], [L, Hq]."""
    hkv, d = out.shape[1], out.shape[-1]
    g = hq // hkv
    out = out.view(hkv, g, L, d).permute(2, 0, 1, 3).reshape(L, hq, d)
    return out, lse[..., :g * L].reshape(hkv, g, L).permute(2, 0, 1).reshape(L, hq)


def attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention that also returns the log-sum-exp of the scaled scores.

    q [Lq, Hq, D], k/v [Lk, Hkv, D] -> out [Lq, Hq, D] (q's dtype), lse [Lq, Hq] fp32.
    """
    L, hq, d = q.shape
    hkv = k.shape[1]
    qh = _fold_heads(q, hkv)
    kh, vh = k.transpose(0, 1).unsqueeze(0), v.transpose(0, 1).unsqueeze(0)  # views [1, Hkv, Lk, D]
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qh, kh, vh, 0.0, False)[:2]
    elif q.device.type == "cuda" and q.dtype in (torch.float16, torch.bfloat16) and d <= 256:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(qh, kh, vh)[:2]  # strided k/v views
    elif q.device.type == "cuda":
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(qh, kh, vh, None, True)[:2]
    else:  # any other device: plain math (small inputs only)
        scores = (qh.float() @ kh.float().transpose(-1, -2)) / math.sqrt(d)
        lse = scores.logsumexp(-1)
        out = ((scores - lse.unsqueeze(-1)).exp() @ vh.float()).to(q.dtype)
    return _unfold(out, lse.float(), L, hq)


def merge(o1: torch.Tensor, lse1: torch.Tensor, o2: torch.Tensor, lse2: torch.Tensor) -> torch.Tensor:
    """Exact combination of two softmax attentions over disjoint key sets; fp32 [L, H, D]."""
    m = torch.maximum(lse1, lse2)
    w1, w2 = torch.exp(lse1 - m).unsqueeze(-1), torch.exp(lse2 - m).unsqueeze(-1)  # [L, H, 1]
    return (o1.float() * w1 + o2.float() * w2) / (w1 + w2)


# -- the banded schedule ---------------------------------------------------------------------------

def frame_bands(frames: int, window: int) -> list[tuple[int, int, int, int]]:
    """(first query frame, end query frame, first key frame, end key frame): consecutive query frames
    that see the same key frames share one band (at short clips most frames see every frame)."""
    bands: list[list[int]] = []
    for i in range(frames):
        lo, hi = max(0, i - window), min(frames, i + window + 1)
        if bands and bands[-1][2:] == [lo, hi]:
            bands[-1][1] = i + 1
        else:
            bands.append([i, i + 1, lo, hi])
    return [tuple(b) for b in bands]


def banded_local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_video: int,
                           tokens_per_frame: int, window: int) -> torch.Tensor:
    """The windowed attention by bands of query frames (module docstring). Returns q's dtype.

    On CPU, half-precision inputs are computed in fp32 (as dit/attention.py's SDPA does).
    """
    work = torch.float32 if q.device.type == "cpu" else q.dtype
    q, k, v = (t.to(work) for t in (q, k, v))
    nv, tpf, L = num_video, tokens_per_frame, q.shape[0]
    out = torch.empty(q.shape, dtype=work, device=q.device)
    if L > nv:  # audio/text queries see every key; the video queries' audio/text part, once
        out[nv:] = attention_lse(q[nv:], k, v)[0]
        ctx_out, ctx_lse = attention_lse(q[:nv], k[nv:], v[nv:])
    for f0, f1, k0, k1 in frame_bands(nv // tpf, window):
        rows, keys = slice(f0 * tpf, f1 * tpf), slice(k0 * tpf, k1 * tpf)
        o, lse = attention_lse(q[rows], k[keys], v[keys])
        out[rows] = merge(o, lse, ctx_out[rows], ctx_lse[rows]).to(work) if L > nv else o
    return out


# -- FlexAttention block mask ------------------------------------------------------------------------

def flex_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def _block_mask(L: int, num_video: int, tokens_per_frame: int, window: int, device: torch.device):
    key = (L, num_video, tokens_per_frame, window, str(device))
    if key in _masks:
        _masks.move_to_end(key)
        return _masks[key]
    from torch.nn.attention.flex_attention import create_block_mask
    nv, tpf = num_video, tokens_per_frame

    def allowed(b, h, q_idx, kv_idx):
        near = (q_idx // tpf - kv_idx // tpf).abs() <= window
        return (q_idx >= nv) | (kv_idx >= nv) | near

    mask = create_block_mask(allowed, B=None, H=None, Q_LEN=L, KV_LEN=L, device=device)
    _masks[key] = mask
    while len(_masks) > 4:
        _masks.popitem(last=False)
    return mask


def flex_local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_video: int,
                         tokens_per_frame: int, window: int) -> torch.Tensor:
    """The windowed attention as one FlexAttention call with a cached block mask. On CUDA the flex
    kernel is compiled once per shape (eager flex would materialise the [L, L] scores)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention
    mask = _block_mask(q.shape[0], num_video, tokens_per_frame, window, q.device)
    fn = flex_attention
    if q.device.type == "cuda":
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        fn = _compiled_flex
    qh, kh, vh = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # [1, H, L, D]
    out = fn(qh, kh, vh, block_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
    return out.squeeze(0).transpose(0, 1)


@torch.compiler.disable
def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, num_video: int, tokens_per_frame: int,
                    window: int, method: str = "auto") -> torch.Tensor:
    """Windowed SR attention. method: auto (flex on CUDA, banded elsewhere), flex, or banded.

    If flex cannot run (torch without FlexAttention, or its kernel fails), one warning is logged and
    the banded schedule is used from then on.
    """
    if method not in METHODS:
        raise ValueError(f"local attention method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        method = "flex" if q.device.type == "cuda" and flex_available() and "flex" not in _warned else "banded"
    if method == "flex":
        try:
            return flex_local_attention(q, k, v, num_video, tokens_per_frame, window)
        except Exception as e:  # an unsupported GPU / torch build: fall back once, loudly
            if "flex" not in _warned:
                _warned.add("flex")
                log.warning("HappyHorse: FlexAttention failed for the windowed SR layers (%s: %s); using the "
                            "banded SDPA schedule instead.", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    return banded_local_attention(q, k, v, num_video, tokens_per_frame, window).to(q.dtype)
