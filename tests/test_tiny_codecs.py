"""Stand-in codecs: real latent geometry, deterministic, encode = pseudo-inverse of decode."""
from __future__ import annotations

import pytest
import torch

from happyhorse_core.testing import tiny_codecs as tc
from happyhorse_core.geometry import ClipGeometry


@pytest.mark.parametrize("seconds", [2, 5])
@pytest.mark.parametrize("aspect", ["16:9", "9:16"])
def test_shapes_follow_geometry(aspect, seconds):
    g = ClipGeometry.from_preset(aspect, "256p", seconds)
    z = torch.randn(g.video_latent_shape, generator=torch.Generator().manual_seed(seconds))
    frames = tc.decode_video(z)
    assert frames.shape == (1, 3, g.decoded_frames, g.height, g.width)
    assert frames.dtype == torch.float32 and frames.min() >= 0 and frames.max() <= 1
    assert tc.encode_video(frames).shape == g.video_latent_shape
    a = torch.randn(g.audio_latent_shape)
    wave = tc.decode_audio(a)
    assert wave.shape == (2, g.audio_samples_nominal) == (2, 2048 * g.audio_frames)
    assert tc.encode_audio(wave).shape == g.audio_latent_shape


def test_decoded_frame_counts():
    assert ClipGeometry(256, 256, 2).decoded_frames == 49 and ClipGeometry(256, 256, 5).decoded_frames == 125
    assert tc.decode_video(torch.zeros(1, 48, 1, 2, 2)).shape == (1, 3, 1, 32, 32)  # one image


def test_round_trip_inverts_decode():
    z = 0.2 * torch.randn(2, 48, 3, 4, 6, generator=torch.Generator().manual_seed(0))  # small: no clamping
    frames = tc.decode_video(z)
    assert 0 < frames.min() and frames.max() < 1
    assert torch.allclose(tc.encode_video(frames), z, atol=1e-4)
    a = torch.randn(1, 7, 64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(tc.encode_audio(tc.decode_audio(a)), a, atol=1e-4)
    assert torch.allclose(tc.encode_audio(tc.decode_audio(a)[None]), a, atol=1e-4)  # ComfyUI [1, 2, N]


def test_in_between_frames_interpolate():
    z = torch.randn(1, 48, 2, 2, 2, generator=torch.Generator().manual_seed(2)) * 0.2
    frames = tc.decode_video(z)  # [1, 3, 5, 32, 32]
    first, last = tc.decode_video(z[:, :, :1]), tc.decode_video(z[:, :, 1:])
    assert torch.allclose(frames[:, :, 0], first[:, :, 0]) and torch.allclose(frames[:, :, 4], last[:, :, 0])
    assert torch.allclose(frames[:, :, 2], 0.5 * (first[:, :, 0] + last[:, :, 0]), atol=1e-6)


def test_deterministic_and_seeded():
    z = torch.randn(1, 48, 2, 2, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(tc.TinyVideoCodec().decode(z), tc.TinyVideoCodec().decode(z))
    assert not torch.allclose(tc.TinyVideoCodec(seed=7).decode(z), tc.TinyVideoCodec().decode(z))
    a = torch.randn(1, 3, 64)
    assert torch.equal(tc.TinyAudioCodec().decode(a), tc.decode_audio(a))


def test_audio_encode_pads_partial_hop():
    wave = torch.randn(2, 2048 * 3 + 5)
    assert tc.encode_audio(wave).shape == (1, 4, 64)


@pytest.mark.badinput
@pytest.mark.parametrize(
    "fn,arg,message",
    [
        (tc.decode_video, torch.zeros(1, 16, 2, 2, 2), r"\[B, 48, T, h, w\]"),
        (tc.encode_video, torch.zeros(1, 3, 4, 32, 32), "4k\\+1"),
        (tc.encode_video, torch.zeros(1, 3, 5, 40, 32), "multiple of 16"),
        (tc.encode_video, torch.zeros(1, 32, 32, 3), r"\[B, 3, F, H, W\]"),
        (tc.decode_audio, torch.zeros(1, 10, 32), r"\[1, F, 64\]"),
        (tc.decode_audio, torch.zeros(2, 10, 64), r"\[1, F, 64\]"),
        (tc.encode_audio, torch.zeros(1, 100), "stereo"),
        (tc.encode_audio, torch.zeros(2, 0), "stereo"),
    ],
)
def test_bad_shapes(fn, arg, message):
    with pytest.raises(ValueError, match=message):
        fn(arg)
