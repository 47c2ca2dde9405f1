"""Fuzz the host-boundary checks: clip size/duration -> latents -> SR size never crash except with our ValueError.

Covers geometry.ClipGeometry.from_request, validation.check_clip_latents, super_resolution.sr_latent_size and
validation.sr_latent_hw together (the sequence packing and plain geometry have their own fuzz tests in
test_sequence.py and test_geometry.py).
"""
from __future__ import annotations

import warnings

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from happyhorse_core.geometry import ClipGeometry, SizeRoundedWarning
from happyhorse_core.sampling.super_resolution import sr_latent_size
from happyhorse_core.validation import check_clip_latents, sr_latent_hw

SIZES = st.one_of(st.integers(-64, 2200), st.integers(-(10**12), 10**12),
                  st.floats(allow_nan=True, allow_infinity=True), st.none(), st.booleans(), st.text(max_size=3))
SECONDS = st.one_of(st.integers(-3, 20), st.floats(-2, 20), st.none())


def _clip(t: int, f: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents with the given frame counts (spatial size 2x2: the checks only relate T, F and the batch)."""
    return torch.zeros(batch, 48, t, 2, 2), torch.zeros(batch, 64, f)


@settings(max_examples=250, deadline=None)
@given(w=SIZES, h=SIZES, seconds=SECONDS, delta=st.integers(-12, 12).filter(lambda d: d != 0),
       target=st.sampled_from(["540p", "1080p", "720p", "256p"]))
def test_request_to_latents_to_sr(w, h, seconds, delta, target):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SizeRoundedWarning)
        try:
            geo = ClipGeometry.from_request(w, h, seconds)
        except ValueError:
            return
    _, c, t, lh, lw = geo.video_latent_shape
    check_clip_latents(*_clip(t, geo.audio_frames))  # one clip: always accepted
    f_other = geo.audio_frames + delta
    if f_other >= 1 and (f_other - 1) // 4 + 1 != t:
        try:
            check_clip_latents(*_clip(t, f_other))
        except ValueError as e:
            assert "does not match the video latent" in str(e)
        else:
            raise AssertionError(f"{f_other} audio frames accepted for T={t}")
    try:
        sr = geo.sr_geometry(target)
    except ValueError:
        sr = None
    try:
        hw = sr_latent_hw(lh, lw, target)
    except ValueError:
        hw = None
    assert (hw is None) == (sr is None)
    if sr is not None:
        assert sr.width >= geo.width and sr.height >= geo.height and sr.seconds == geo.seconds
        assert hw == (sr.latent_h, sr.latent_w) == sr_latent_size(sr.height, sr.width)
        assert hw[0] % 2 == 0 and hw[1] % 2 == 0 and hw[0] >= lh and hw[1] >= lw


@settings(max_examples=300, deadline=None)
@given(vshape=st.lists(st.integers(0, 5), min_size=1, max_size=6), ashape=st.lists(st.integers(0, 9), min_size=1,
       max_size=4), vch=st.sampled_from([48, 16, 64]), ach=st.sampled_from([64, 48, 2]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.int64, torch.bool]),
       poison=st.sampled_from([None, float("nan"), float("inf")]))
def test_check_clip_latents_only_value_errors(vshape, ashape, vch, ach, dtype, poison):
    vshape = vshape[:1] + [vch] + vshape[1:] if len(vshape) > 1 else vshape
    ashape = ashape[:1] + [ach] + ashape[1:] if len(ashape) > 1 else ashape
    video, audio = torch.zeros(vshape, dtype=dtype), torch.zeros(ashape, dtype=dtype)
    if poison is not None and video.is_floating_point() and video.numel():
        video.view(-1)[-1] = poison
    try:
        check_clip_latents(video, audio)
    except ValueError:
        return
    b, c, t, h, w = video.shape
    assert (c, audio.shape[1]) == (48, 64) and audio.ndim == 3 and b == audio.shape[0] >= 1
    assert (audio.shape[2] - 1) // 4 + 1 == t >= 1 and h % 2 == 0 and w % 2 == 0 and min(h, w) >= 2
    assert video.is_floating_point() and torch.isfinite(video).all()


@settings(max_examples=300, deadline=None)
@given(height=SIZES, width=SIZES)
def test_sr_latent_size_only_value_errors(height, width):
    try:
        h, w = sr_latent_size(height, width)
    except ValueError:
        return
    assert type(h) is int and type(w) is int
    assert h >= 2 and w >= 2 and h % 2 == 0 and w % 2 == 0
    assert h * 16 <= int(height) and w * 16 <= int(width)


@settings(max_examples=200, deadline=None)
@given(h=st.integers(-4, 200), w=st.integers(-4, 200), target=st.sampled_from(["540p", "1080p", "4k", ""]))
def test_sr_latent_hw_only_value_errors(h, w, target):
    try:
        lh, lw = sr_latent_hw(h, w, target)
    except ValueError:
        return
    assert lh >= h and lw >= w and lh % 2 == 0 and lw % 2 == 0
