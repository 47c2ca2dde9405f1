"""mp4 muxing (MODEL_SPEC §7.4): H.264 25 fps + AAC 44.1 kHz stereo, atomic writes."""
from __future__ import annotations

import math

import av
import numpy as np
import pytest
import torch

from happyhorse_core.media import mux as media
from happyhorse_core.media.audio import to_output_rate
from happyhorse_core.geometry import AUDIO_HOP, AUDIO_NOMINAL_RATE, ClipGeometry

H, W = 96, 160  # small frames keep the encode fast


def _moving_gradient(n: int, h: int = H, w: int = W) -> torch.Tensor:
    """Smooth frames [n, h, w, 3] in 0..1 that change over time (cheap to encode)."""
    t = torch.arange(n, dtype=torch.float32)[:, None, None]
    y = torch.linspace(0, 1, h)[None, :, None]
    x = torch.linspace(0, 1, w)[None, None, :]
    r = (x + 0.02 * t) % 1.0
    g = y.expand(n, h, w)
    b = (0.5 + 0.4 * torch.sin(0.3 * t)).expand(n, h, w)
    return torch.stack([r.expand(n, h, w), g, b], dim=-1)


def _tone_nominal(frames: int, freq: float = 440.0) -> torch.Tensor:
    """Stereo tone as the audio VAE would give it: 2048 samples per latent frame at 51.2 kHz."""
    k = torch.arange(frames * AUDIO_HOP, dtype=torch.float64)
    return (0.5 * torch.sin(2 * math.pi * freq * k / AUDIO_NOMINAL_RATE)).float().expand(2, -1)


def _decode_first_frame_and_audio(path, audio: bool = True):
    with av.open(str(path)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    if not audio:
        return first, None
    with av.open(str(path)) as c:
        pcm = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)  # fltp [2, n]
    return first, pcm


def test_two_second_clip_with_tone(tmp_path):
    g = ClipGeometry(448, 256, 2)
    frames = _moving_gradient(g.frames)  # 51 frames
    wav = to_output_rate(_tone_nominal(g.audio_frames))  # [2, int(2048·51·441/512)] at 44.1 kHz
    out = media.write_mp4(tmp_path / "clip.mp4", frames, wav, sample_rate=44100, fps=25)
    info = media.probe_mp4(out)
    assert info["video_codec"] == "h264" and info["fps"] == 25.0 and info["frames"] == 51
    assert (info["width"], info["height"]) == (W, H)
    assert info["audio_codec"] == "aac" and info["sample_rate"] == 44100 and info["audio_channels"] == 2
    assert info["video_duration_s"] == pytest.approx(2.04)
    assert abs(info["audio_duration_s"] - info["video_duration_s"]) <= 0.04
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    first, pcm = _decode_first_frame_and_audio(out)
    assert np.abs(first / 255.0 - frames[0].numpy()).mean() < 0.03  # the picture survived the codec
    spectrum = np.abs(np.fft.rfft(pcm[0, 4096:4096 + 44100]))  # 1 s of decoded audio
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins: the tone is still 440 Hz
    assert list(tmp_path.iterdir()) == [out]  # no temp files left


def test_uint8_mono_and_resampled_audio(tmp_path):
    frames = (_moving_gradient(25) * 255).round().to(torch.uint8).numpy()
    k = torch.arange(51200)
    mono = 0.3 * torch.sin(2 * math.pi * 1000 * k / 51200)[None]  # [1, N] at 51.2 kHz, 1 s
    info = media.probe_mp4(media.write_mp4(tmp_path / "m.mp4", frames, mono, sample_rate=51200))
    assert info["frames"] == 25 and info["sample_rate"] == 44100 and info["audio_channels"] == 2
    assert info["audio_duration_s"] == pytest.approx(1.0, abs=0.001)


def test_video_only_bfloat16_frames(tmp_path):
    frames = _moving_gradient(5)
    out = media.write_mp4(tmp_path / "v.mp4", frames.to(torch.bfloat16))
    info = media.probe_mp4(out)
    assert info["frames"] == 5 and info["audio_codec"] is None and info["audio_duration_s"] is None
    first, _ = _decode_first_frame_and_audio(out, audio=False)
    assert np.abs(first / 255.0 - frames[0].numpy()).mean() < 0.03


@pytest.mark.badinput
def test_odd_size_errors_or_pads(tmp_path):
    odd = _moving_gradient(3, 95, 161)
    with pytest.raises(ValueError, match="even width and height"):
        media.write_mp4(tmp_path / "odd.mp4", odd)
    assert not any(tmp_path.iterdir())
    info = media.probe_mp4(media.write_mp4(tmp_path / "odd.mp4", odd, pad_to_even=True))
    assert (info["width"], info["height"]) == (162, 96)


@pytest.mark.badinput
@pytest.mark.parametrize(
    "frames,wave,message",
    [
        (torch.zeros(4, 32, 32), None, r"\[T, H, W, 3\]"),
        (torch.zeros(0, 32, 32, 3), None, r"T >= 1"),
        (torch.zeros(2, 32, 32, 3, dtype=torch.int32), None, "uint8 or float"),
        (torch.full((2, 32, 32, 3), float("nan")), None, "NaN"),
        (torch.zeros(2, 32, 32, 3), torch.zeros(3, 100), "C = 1 or 2"),
        (torch.zeros(2, 32, 32, 3), torch.zeros(2, 100, dtype=torch.int16), "float"),
        (torch.zeros(2, 32, 32, 3), torch.full((2, 100), float("inf")), "NaN or infinite"),
    ],
)
def test_bad_inputs(tmp_path, frames, wave, message):
    with pytest.raises(ValueError, match=message):
        media.write_mp4(tmp_path / "bad.mp4", frames, wave)
    assert not any(tmp_path.iterdir())


@pytest.mark.badinput
def test_bad_suffix_and_missing_probe(tmp_path):
    with pytest.raises(ValueError, match=r"\.mp4"):
        media.write_mp4(tmp_path / "clip.mov", _moving_gradient(2))
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        media.probe_mp4(tmp_path / "nope.mp4")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_error_mid_write_leaves_no_file(tmp_path, monkeypatch, error):
    real = media._frame_uint8
    seen_parts = []

    def failing(frame, index):
        if index == 55:  # past x264's look-ahead: packets for earlier frames are in the temp file
            seen_parts.extend((p.name, p.stat().st_size) for p in tmp_path.iterdir())
            raise error("stop")
        return real(frame, index)

    monkeypatch.setattr(media, "_frame_uint8", failing)
    dest = tmp_path / "clip.mp4"
    with pytest.raises(error):
        media.write_mp4(dest, _moving_gradient(60), torch.zeros(2, 44100))
    assert len(seen_parts) == 1
    (name, size), = seen_parts
    assert name.startswith(".clip.") and name.endswith(".part") and size > 0
    assert not any(tmp_path.iterdir())


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    dest = media.write_mp4(tmp_path / "clip.mp4", _moving_gradient(3))
    before = dest.read_bytes()

    def failing(frame, index):
        raise RuntimeError("disk full")

    monkeypatch.setattr(media, "_frame_uint8", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        media.write_mp4(dest, _moving_gradient(8))
    assert dest.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
