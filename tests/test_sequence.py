"""Sequence packing: layouts, coordinates (MODEL_SPEC §2.2-2.3), inverse, fuzz."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from happyhorse_core.dit.sequence import build_coords, pack, patchify, unpack, unpatchify_output


def test_patchify_is_channel_major():
    lat = torch.arange(48 * 1 * 2 * 2, dtype=torch.float32).reshape(1, 48, 1, 2, 2)
    tok = patchify(lat)  # one token of 192
    c, ph, pw = 5, 1, 0
    assert tok[0, c * 4 + ph * 2 + pw] == lat[0, c, 0, ph, pw]


def test_unpatchify_is_channel_minor():
    tok = torch.arange(192, dtype=torch.float32).reshape(1, 192)
    out = unpatchify_output(tok, 1, 2, 2)
    c, ph, pw = 7, 0, 1
    assert out[0, c, 0, ph, pw] == tok[0, (ph * 2 + pw) * 48 + c]


def _to_channel_minor(tokens: torch.Tensor) -> torch.Tensor:
    # channel-major (c ph pw) -> channel-minor (ph pw c)
    return tokens.reshape(-1, 48, 4).transpose(1, 2).reshape(-1, 192)


@pytest.mark.parametrize("t,h,w,f,n", [(1, 2, 2, 1, 1), (3, 6, 8, 9, 13), (5, 10, 14, 17, 4)])
def test_pack_unpack_round_trip(t, h, w, f, n):
    g = torch.Generator().manual_seed(t * 100 + h)
    video = torch.randn(1, 48, t, h, w, generator=g)
    audio = torch.randn(1, f, 64, generator=g)
    text = torch.randn(n, 3584, generator=g)
    seq = pack(video, audio, text)
    assert seq.split.counts == (t * h * w // 4, f, n)
    v, a = unpack(_to_channel_minor(seq.video), seq.audio, seq)
    assert torch.equal(v, video) and torch.equal(a, audio)


def test_coords_v2_for_odd_sizes():
    T, hp, wp, F, n = 3, 3, 5, 9, 7
    c = build_coords(T, hp, wp, F, n, "v2")
    assert c.shape == (T * hp * wp + F + n, 9)
    v = c[: T * hp * wp]
    assert v[-1, :3].tolist() == [2, 2, 4] and v[0, 3:].tolist() == [T, hp, wp, T, hp, wp]
    a = c[T * hp * wp: T * hp * wp + F]
    assert a[:, 0].tolist() == list(range(F)) and a[0, 3:].tolist() == [F, 1, 1, (F - 1) // 4 + 1, 1, 1]
    txt = c[-n:]
    assert txt[:, 0].tolist() == list(range(-n, 0)) and txt[0, 3:].tolist() == [n, 1, 1, 1, 1, 1]


def test_coords_v1_for_odd_sizes():
    T, hp, wp, F, n = 4, 3, 3, 13, 5
    c = build_coords(T, hp, wp, F, n, "v1")
    a = c[T * hp * wp: T * hp * wp + F]
    assert a[0, 6:].tolist() == [T, 1, 1]
    txt = c[-n:]
    assert txt[:, 0].tolist() == list(range(n)) and txt[0, 6:].tolist() == [2, 1, 1]


def test_v1_needs_two_text_tokens():
    with pytest.raises(ValueError, match="at least 2 text tokens"):
        build_coords(1, 1, 1, 1, 1, "v1")


def test_pack_rejects_bad_shapes():
    with pytest.raises(ValueError, match="must be even"):
        pack(torch.zeros(1, 48, 1, 3, 4), torch.zeros(1, 1, 64), torch.zeros(1, 3584))
    with pytest.raises(ValueError, match="48 channels"):
        pack(torch.zeros(1, 16, 1, 2, 2), torch.zeros(1, 1, 64), torch.zeros(1, 3584))
    with pytest.raises(ValueError, match=r"\[1, C, T, h, w\]"):
        pack(torch.zeros(2, 48, 1, 2, 2), torch.zeros(1, 1, 64), torch.zeros(1, 3584))


@settings(max_examples=60, deadline=None)
@given(t=st.integers(0, 4), h=st.integers(0, 7), w=st.integers(0, 7), f=st.integers(0, 12), n=st.integers(0, 6),
       style=st.sampled_from(["v1", "v2"]))
def test_fuzz_pack_never_crashes_unexpectedly(t, h, w, f, n, style):
    """Random geometry: either a clean round trip or our own ValueError, never another crash."""
    video = torch.randn(1, 48, t, h, w)
    try:
        seq = pack(video, torch.randn(1, f, 64), torch.randn(n, 16), style=style)
    except ValueError:
        return
    assert seq.coords.shape[0] == seq.split.total
    assert torch.isfinite(seq.coords).all()
    v, a = unpack(_to_channel_minor(seq.video), seq.audio, seq)
    assert torch.equal(v, video) and a.shape == (1, f, 64)
