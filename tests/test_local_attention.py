"""Windowed SR attention without key copies (dit/local_attention.py) equals dense masked attention.

Tolerance (fp32): every output is a convex combination of rows of v, so errors scale with
max |v|. The banded schedule and the dense softmax sum the same terms in another order and the
LSE merge adds an exp, a multiply-add and a divide per output: each a 2^-24 relative rounding,
plus score rounding of D = 32-term dot products (<= 32 * 2^-24 relative on scores of size ~5,
i.e. ~5e-5 absolute in a score, which moves a softmax weight by that relative amount). Bound:
atol = 1e-5 * max |v| (measured ~1e-7 here), rtol 0.
"""
from __future__ import annotations

import pytest
import torch

from happyhorse_core.dit import local_attention as la
from oracles import naive_attention


def window_mask(L: int, nv: int, tpf: int, window: int) -> torch.Tensor:
    """Dense [L, L] bool mask of MODEL_SPEC §4.6, written independently of the module."""
    idx = torch.arange(L)
    qv, kv = idx[:, None] < nv, idx[None, :] < nv
    near = ((idx[:, None] // tpf) - (idx[None, :] // tpf)).abs() <= window
    return ~qv | ~kv | near


def qkv(L: int, hq: int, hkv: int, d: int = 32, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.randn(L, h, d, generator=g) * s).to(dtype) for h, s in ((hq, 2.0), (hkv, 2.0), (hkv, 1.0)))


GEOMETRIES = [  # (frames, tokens per frame, audio+text tokens, window, hq, hkv)
    (16, 4, 13, 11, 3, 1),  # the golden dit_case2_sr geometry: frames 0-3 and 12-15 cut
    (7, 5, 9, 1, 4, 2),  # narrow window: every band different
    (6, 3, 0, 2, 2, 2),  # video only (no audio/text keys): no merge
    (3, 4, 5, 11, 4, 1),  # window wider than the clip: one band, plain attention plus merge
]


@pytest.mark.parametrize("frames, tpf, extra, window, hq, hkv", GEOMETRIES)
@pytest.mark.parametrize("method", ["banded", "flex"])
def test_local_attention_equals_dense_masked_softmax(method, frames, tpf, extra, window, hq, hkv):
    if method == "flex" and not la.flex_available():
        pytest.skip("this torch has no FlexAttention")
    nv = frames * tpf
    L = nv + extra
    q, k, v = qkv(L, hq, hkv, seed=frames)
    ref = naive_attention(q, k, v, window_mask(L, nv, tpf, window))
    got = la.local_attention(q, k, v, num_video=nv, tokens_per_frame=tpf, window=window, method=method)
    assert got.shape == q.shape and got.dtype == q.dtype
    torch.testing.assert_close(got, ref, atol=1e-5 * v.abs().max().item(), rtol=0)


def test_the_window_really_cuts_keys():
    q, k, v = qkv(7 * 5 + 9, 4, 2)
    windowed = la.local_attention(q, k, v, num_video=35, tokens_per_frame=5, window=1)
    assert not torch.allclose(windowed, naive_attention(q, k, v), atol=1e-3)


def test_banded_schedule_copies_no_keys(monkeypatch):
    """No torch.cat (the old per-frame key concatenation) anywhere in the banded schedule."""
    calls = []
    real_cat = torch.cat
    monkeypatch.setattr(torch, "cat", lambda *a, **kw: calls.append(1) or real_cat(*a, **kw))
    q, k, v = qkv(16 * 4 + 13, 3, 1)
    la.banded_local_attention(q, k, v, 64, 4, 11)
    assert calls == []


def test_frame_bands_cover_every_query_frame_once_with_its_window():
    for frames, window in ((32, 11), (5, 0), (3, 11), (24, 11)):
        bands = la.frame_bands(frames, window)
        covered = [i for f0, f1, _, _ in bands for i in range(f0, f1)]
        assert covered == list(range(frames))
        for f0, f1, k0, k1 in bands:
            for i in range(f0, f1):
                assert (k0, k1) == (max(0, i - window), min(frames, i + window + 1))
    assert len(la.frame_bands(20, 11)) < 20  # frames that see the whole clip share a band


def test_bf16_inputs_match_within_one_bf16_rounding():
    """bf16 in: both paths attend in fp32 on CPU and round once to bf16 at the end (2^-8 relative)."""
    q, k, v = qkv(7 * 5 + 9, 4, 2, dtype=torch.bfloat16)
    mask = window_mask(44, 35, 5, 1)
    ref = naive_attention(q.float(), k.float(), v.float(), mask)
    got = la.local_attention(q, k, v, num_video=35, tokens_per_frame=5, window=1)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref, atol=1e-5 * v.abs().max().item(), rtol=2 ** -8)


def test_attention_lse_returns_the_log_sum_exp():
    q, k, v = qkv(11, 4, 2)
    out, lse = la.attention_lse(q, k[:6], v[:6])
    kf = k[:6].repeat_interleave(2, dim=1)
    scores = torch.einsum("qhd,khd->qhk", q, kf) / 32 ** 0.5
    torch.testing.assert_close(lse, scores.logsumexp(-1), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(out, naive_attention(q, k[:6], v[:6]), atol=1e-5 * v.abs().max().item(), rtol=0)


def test_unknown_method_is_refused():
    q, k, v = qkv(8, 2, 1)
    with pytest.raises(ValueError, match="local attention method"):
        la.local_attention(q, k, v, num_video=8, tokens_per_frame=4, window=1, method="fast")
