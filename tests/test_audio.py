"""Audio output timing (51 200 -> 44 100 Hz, MODEL_SPEC §7.3) and voice-track preparation."""
from __future__ import annotations

import math

import pytest
import torch

from happyhorse_core.media import audio
from happyhorse_core.geometry import ClipGeometry

G = 1 / math.sqrt(2)


def _tone(freq: float, rate: int, n: int, dtype=torch.float64) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    return torch.sin(2 * math.pi * freq * k / rate).to(dtype)


# -- output timing ------------------------------------------------------------------------------
def test_to_output_rate_matches_scipy():
    signal = pytest.importorskip("scipy.signal")
    g = ClipGeometry(448, 256, 4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, g.audio_samples_nominal, dtype=torch.float64, generator=gen)
    y = audio.to_output_rate(x)
    assert y.shape == (2, g.audio_samples_output) == (2, 178164)
    ref = signal.resample(x.T.numpy(), int(x.shape[1] * 441 / 512))  # as the reference: [samples, 2]
    err = (y.T - torch.from_numpy(ref)).abs().max().item()
    assert err < 1e-10, err
    y32 = audio.to_output_rate(x.float())
    assert y32.dtype == torch.float32
    assert (y32.T.double() - torch.from_numpy(ref)).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    "n,num", [(10, 7), (10, 8), (11, 8), (11, 7), (8, 10), (7, 10), (9, 12), (12, 12), (1, 3), (5, 1)]
)
def test_fft_resample_matches_scipy_all_parities(n, num):
    signal = pytest.importorskip("scipy.signal")
    x = torch.randn(3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n * 100 + num))
    y = audio.fft_resample(x, num, dim=1)
    ref = torch.from_numpy(signal.resample(x.numpy(), num, axis=1))
    assert y.shape == (3, num)
    assert torch.allclose(y, ref, atol=1e-12, rtol=0)


def test_to_output_rate_keeps_pitch_and_duration():
    # 4040 whole cycles of 1 kHz in 4.04 s at 51 200 Hz stay 1 kHz at 44 100 Hz, same duration.
    x = _tone(1000, 51200, 206848)[None]
    y = audio.to_output_rate(x)[0]
    assert y.shape[0] / 44100 == pytest.approx(206848 / 51200)
    assert (y - _tone(1000, 44100, y.shape[0])).abs().max().item() < 1e-9


@pytest.mark.badinput
def test_fft_resample_rejects():
    with pytest.raises(ValueError, match="num >= 1"):
        audio.fft_resample(torch.zeros(4), 0)
    with pytest.raises(ValueError, match="empty"):
        audio.fft_resample(torch.zeros(0), 4)
    with pytest.raises(ValueError, match="real"):
        audio.fft_resample(torch.zeros(4, dtype=torch.complex64), 4)


# -- band-limited resampler ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "rate,freq,new_rate,tol",
    [
        (8000, 1000, 51200, 1e-3), (11025, 3000, 51200, 1e-3), (16000, 5000, 51200, 1e-3),
        (22050, 5000, 51200, 1e-3), (44100, 1000, 51200, 1e-3), (44100, 12000, 51200, 1e-3),
        (48000, 5000, 51200, 1e-3), (96000, 5000, 51200, 1e-3), (51200, 1000, 44100, 1e-3),
        (44099, 1000, 51200, 2e-3),  # odd rate: ratio approximated with <= 4096 phases
    ],
)
def test_resample_sine_keeps_frequency(rate, freq, new_rate, tol):
    x = _tone(freq, rate, rate // 2, torch.float32)[None]  # 0.5 s
    y = audio.resample(x, rate, new_rate)[0].double()
    assert y.shape[0] == math.ceil(x.shape[1] * new_rate / rate)
    edge = new_rate // 100  # ignore 10 ms at both ends (zero outside the signal)
    ref = _tone(freq, new_rate, y.shape[0])
    assert (y - ref)[edge:-edge].abs().max().item() < tol


@pytest.mark.parametrize("freq", [30000, 40000])
def test_resample_does_not_alias(freq):
    # 96 kHz -> 51.2 kHz: tones above the new Nyquist (25.6 kHz) must vanish, not fold down.
    y = audio.resample(_tone(freq, 96000, 48000, torch.float32)[None], 96000, 51200)[0]
    assert y[512:-512].pow(2).mean().sqrt().item() < 1e-4


@pytest.mark.parametrize("n", [1, 2, 3, 100, 441, 1000, 4097])
@pytest.mark.parametrize(
    "rate,new_rate", [(44100, 51200), (96000, 51200), (8000, 51200), (44099, 51200), (51200, 44100)]
)
def test_resample_lengths_and_dtype(n, rate, new_rate):
    x = torch.randn(2, 3, n, dtype=torch.float64)
    y = audio.resample(x, rate, new_rate)
    assert y.shape == (2, 3, math.ceil(n * new_rate / rate)) and y.dtype == torch.float64
    assert torch.isfinite(y).all()


# -- voice-track preparation ---------------------------------------------------------------------
def test_prepare_mono_8k_is_padded_and_duplicated():
    x = 0.5 * _tone(440, 8000, 8000, torch.float32)  # 1 s mono [N]
    p = audio.prepare_voice_track(x, 8000, target_rate=51200, target_samples=2 * 51200)
    assert p.waveform.shape == (2, 102400) and p.waveform.dtype == torch.float32 and p.sample_rate == 51200
    assert (p.padded, p.trimmed, p.silent) == (True, False, False)
    assert p.source_duration_s == pytest.approx(1.0)
    assert torch.equal(p.waveform[0], p.waveform[1])
    assert p.waveform[:, 51200 + 600 :].abs().max() == 0  # zero tail after the filter's reach
    ref = 0.5 * _tone(440, 51200, 51200)
    assert (p.waveform[0, 1000:50000].double() - ref[1000:50000]).abs().max() < 1e-3


def test_prepare_stereo_48k_is_trimmed_and_downmixed_to_mono():
    x = torch.stack([_tone(300, 48000, 3 * 48000), _tone(500, 48000, 3 * 48000)]).float()
    p = audio.prepare_voice_track(x[None], 48000, target_rate=44100, target_samples=44100)  # ComfyUI [1, C, N]
    assert p.waveform.shape == (2, 44100) and (p.trimmed, p.padded) == (True, False)
    assert torch.equal(p.waveform[0], p.waveform[1])  # the reference feeds the VAE mono on both channels
    mono = (_tone(300, 44100, 44100) + _tone(500, 44100, 44100)) / 2
    assert (p.waveform[1, 500:40000].double() - mono[500:40000]).abs().max() < 1e-3


def test_prepare_cuts_before_resampling_without_changing_the_result():
    """Only the clip's share (+ the resampler's reach) is resampled; the samples equal those of the whole track."""
    g = torch.Generator().manual_seed(3)
    for rate in (8000, 44100, 48000, 192000):
        long = torch.randn(6, 20 * rate, generator=g) * 0.1  # 20 s of 5.1
        p = audio.prepare_voice_track(long, rate, 51200, 51200)  # a 1 s clip
        whole = audio.resample(audio.downmix_to_mono(long), rate, 51200)[:, :51200]
        assert p.trimmed and not p.padded and p.source_duration_s == pytest.approx(20.0)
        torch.testing.assert_close(p.waveform[0], whole[0], atol=1e-6, rtol=0)


def test_voice_frames_follow_the_reference_rule():
    assert audio.voice_frames(4 * 22050, 22050, 15) == 100  # 4.0 s -> 204800 samples at 51.2 kHz -> 100
    assert audio.voice_frames(60 * 8000, 8000, 2.5) == 62  # cut to 2.5 s = 128000 samples -> 62 whole frames
    assert audio.voice_frames(8000, 8000, 5) == 25


def test_output_audio_is_cut_to_the_decoded_video():
    """The CLI and HappyHorse Decode Audio share output_audio: same clip, same audio length."""
    for f in (26, 51, 100, 126):
        decoded = torch.zeros(1, 2, 2048 * f)
        frames = 4 * ((f - 1) // 4) + 1
        assert audio.output_audio(decoded, f).shape[-1] == frames * 44100 // 25
        assert audio.output_audio(decoded, f, trim_to_video=False).shape[-1] == 2048 * f * 441 // 512


def test_voice_for_video_keeps_the_original_recording():
    x = torch.randn(2, 5 * 48000)
    out = audio.voice_for_video(x[None], 48000, 97)
    assert out.shape == (2, 97 * 48000 // 25) and torch.equal(out, x[:, :out.shape[1]])
    assert audio.voice_for_video(x[:, :1000], 48000, 97).shape == (2, 97 * 48000 // 25)  # padded


RSS_CHILD = """
import resource, sys
import torch
from happyhorse_core.media.audio import prepare_voice_track
from happyhorse_core.media.read import read_audio
torch.zeros(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
wave, rate = read_audio(sys.argv[1], max_seconds=1.5)
prep = prepare_voice_track(wave, rate, 51200, 51200)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(wave.shape[-1], rate, prep.waveform.shape[-1], after - before)
"""


@pytest.mark.slow
def test_an_hour_of_8k_flac_for_a_one_second_clip_costs_little_memory(tmp_path):
    """Stream-decode + cut before resampling: peak RSS of a child process grows by a few MB, not by the
    115 MB an hour of 8 kHz float32 samples would take."""
    import subprocess
    import sys
    from pathlib import Path

    import av
    import numpy as np
    path = tmp_path / "hour.flac"
    with av.open(str(path), "w") as box:
        stream = box.add_stream("flac", rate=8000, layout="mono")
        block = (np.sin(np.arange(8000 * 60) * 0.05) * 8000).astype(np.int16)[None]  # one minute
        for _ in range(60):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate = 8000
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    proc = subprocess.run([sys.executable, "-c", RSS_CHILD, str(path)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert proc.returncode == 0, proc.stderr
    samples, rate, prepared, grew_kb = map(int, proc.stdout.split())
    assert rate == 8000 and 12000 <= samples <= 8000 * 2 and prepared == 51200
    assert grew_kb < 40 * 1024, f"peak RSS grew by {grew_kb / 1024:.0f} MB"


def test_prepare_exact_length_has_no_flags():
    p = audio.prepare_voice_track(_tone(440, 51200, 51200, torch.float32), 51200, 51200, 51200)
    assert (p.trimmed, p.padded, p.silent) == (False, False, False)


@pytest.mark.parametrize("level,silent", [(0.0, True), (1e-5, True), (1e-2, False)])
def test_prepare_detects_silence(level, silent):
    x = level * torch.randn(2, 16000, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    assert audio.prepare_voice_track(x, 16000, 51200, 51200).silent is silent


def test_downmix_coefficients():
    n = 8
    only = lambda c, idx: torch.zeros(c, n).index_fill_(0, torch.tensor([idx]), 1.0)  # noqa: E731
    norm51, norm71 = 1 + 2 * G, 1 + 3 * G
    centre = audio.downmix_to_stereo(only(6, 2))
    assert torch.allclose(centre, torch.full((2, n), G / norm51))
    assert audio.downmix_to_stereo(only(6, 3)).abs().max() == 0  # LFE dropped
    front_left = audio.downmix_to_stereo(only(6, 0))
    assert torch.allclose(front_left[0], torch.full((n,), 1 / norm51)) and front_left[1].abs().max() == 0
    back_right = audio.downmix_to_stereo(only(6, 5))
    assert back_right[0].abs().max() == 0 and torch.allclose(back_right[1], torch.full((n,), G / norm51))
    side_left = audio.downmix_to_stereo(only(8, 6))
    assert torch.allclose(side_left[0], torch.full((n,), G / norm71)) and side_left[1].abs().max() == 0
    full = audio.downmix_to_stereo(torch.ones(6, n))  # full scale everywhere (LFE aside) cannot clip
    assert full.abs().max() <= 1.0 + 1e-6


@pytest.mark.badinput
@pytest.mark.parametrize(
    "wave,rate,message",
    [
        (torch.zeros(4, 100), 16000, "4 channels"),
        (torch.zeros(100, 2), 16000, r"\[N, C\] instead"),
        (torch.zeros(2, 1, 100), 16000, "batch of 2"),
        (torch.zeros(2, 0), 16000, "empty"),
        (torch.tensor([[0.0, float("nan")]]), 16000, "NaN"),
        (torch.zeros(1, 100), 4000, "outside 8000..192000"),
        (torch.zeros(1, 1, 1, 100), 16000, "must be"),
        ([0.0, 1.0], 16000, "torch.Tensor"),
    ],
)
def test_prepare_rejects(wave, rate, message):
    with pytest.raises(ValueError, match=message):
        audio.prepare_voice_track(wave, rate, 51200, 51200)


@pytest.mark.badinput
def test_resample_rejects_bad_rates():
    with pytest.raises(ValueError, match="positive"):
        audio.resample(torch.zeros(10), 0, 51200)
