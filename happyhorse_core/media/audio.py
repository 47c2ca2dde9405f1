"""Audio timing and voice-track preparation, in torch only (no scipy/torchaudio at run time).

Output (MODEL_SPEC §7.3): the Stable Audio VAE decodes 2048 samples per latent frame and the
latent runs at 25 frames/s, so the waveform is *nominally* 51 200 Hz. The reference re-times it
to 44 100 Hz with ``scipy.signal.resample(x, int(n·441/512))`` (an FFT resample);
:func:`to_output_rate` reproduces that with torch.fft.

Input: a user's voice track can have any rate and channel layout. :func:`prepare_voice_track`
first cuts the track to what the clip needs plus the resampler's reach (so an hour-long file
costs no more than the clip), then, as the reference does, downmixes it to mono and duplicates
that to the two channels the Stable Audio VAE takes, resamples with a band-limited
windowed-sinc interpolator (:func:`resample`), fits it to the clip length and reports what it
changed, so the caller can warn the user. :func:`voice_frames` gives the clip length a voice
track asks for (the reference's rule: the cut track's samples at 51.2 kHz // 2048).

Downmix coefficients (ITU-R BS.775 style, then scaled so a full-scale signal on every
channel cannot clip — the same normalisation ffmpeg applies by default):
  mono: L = R = M
  5.1 (FL FR FC LFE BL BR): L = FL + g·FC + g·BL, R = FR + g·FC + g·BR, g = 1/√2, LFE dropped,
       then both divided by 1 + 2g
  7.1 (FL FR FC LFE BL BR SL SR): as 5.1 plus g·SL / g·SR, divided by 1 + 3g
Mono (the voice input): (L + R) / 2 of that stereo downmix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from ..geometry import AUDIO_HOP, AUDIO_NOMINAL_RATE, AUDIO_OUTPUT_RATE, FPS, video_matched_samples

MIN_INPUT_RATE, MAX_INPUT_RATE = 8_000, 192_000
SILENCE_PEAK = 10 ** (-60 / 20)  # peak below -60 dBFS counts as silent
_G = 1 / math.sqrt(2)


# -- output timing (§7.3) -------------------------------------------------------------------
def fft_resample(x: torch.Tensor, num: int, dim: int = -1) -> torch.Tensor:
    """FFT resampling of a real signal to ``num`` samples along ``dim``.

    Same result as ``scipy.signal.resample(x, num, axis=dim)`` (no window): keep the lowest
    min(n, num)//2 + 1 rfft bins, fix the unpaired Nyquist bin (×2 when shrinking, ×½ when
    growing, if min(n, num) is even), inverse rfft to ``num`` samples, scale by num/n.
    Computed in float64, returned in the input dtype.
    """
    if x.is_complex():
        raise ValueError("fft_resample expects a real signal")
    if num < 1:
        raise ValueError(f"fft_resample needs num >= 1, got {num}")
    n = x.shape[dim]
    if n == 0:
        raise ValueError("fft_resample got an empty signal")
    work = x.movedim(dim, -1).to(torch.float64)
    spec = torch.fft.rfft(work)  # [..., n//2 + 1]
    m = min(n, num)
    spec = spec[..., : m // 2 + 1].clone()
    if m % 2 == 0 and num != n:
        spec[..., m // 2] *= 2.0 if num < n else 0.5
    out = torch.fft.irfft(spec, n=num) * (num / n)  # [..., num]
    return out.movedim(-1, dim).to(x.dtype)


def to_output_rate(waveform: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Re-time a decoded waveform from the nominal 51 200 Hz to 44 100 Hz (n → int(n·441/512))."""
    n = waveform.shape[dim]
    return fft_resample(waveform, n * AUDIO_OUTPUT_RATE // AUDIO_NOMINAL_RATE, dim=dim)


def output_audio(decoded: torch.Tensor, audio_frames: int, trim_to_video: bool = True) -> torch.Tensor:
    """Decoded waveform [..., 2048·F] at the nominal 51.2 kHz -> [..., N] at 44.1 kHz.

    With `trim_to_video` the sound is cut to the decoded video's length, (4·((F−1)//4) + 1) / 25 s,
    so both streams of an mp4 end together; the CLI and HappyHorse Decode Audio both use this, so
    the same clip gets the same audio length in both.
    """
    wave = to_output_rate(decoded.float(), dim=-1)
    if trim_to_video:
        wave = wave[..., :video_matched_samples(audio_frames)]
    return wave.contiguous()


# -- band-limited resampling for input tracks -----------------------------------------------
def _kaiser(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Kaiser window on x in [-1, 1] (0 outside)."""
    arg = (1 - x.clamp(-1, 1) ** 2).clamp_min(0).sqrt()
    w = torch.special.i0(beta * arg) / torch.special.i0(torch.tensor(beta, dtype=x.dtype))
    return torch.where(x.abs() <= 1, w, torch.zeros_like(w))


def _phase_bank(m: int, l: int, half: int, cutoff: float, beta: float) -> torch.Tensor:
    """Polyphase filter bank [l, m + 2·half] (float64) for an input/output ratio of m/l.

    Output n = q·l + p sits at input time q·m + p·m/l and uses input samples
    floor(t) − half + 1 … floor(t) + half. Against a window of the half-padded input that
    starts at q·m, those taps sit at columns floor(p·m/l) + 1 … floor(p·m/l) + 2·half, so one
    matrix product of all windows with this bank yields every phase at once.
    """
    k = 2 * half
    phase = torch.arange(l, dtype=torch.int64)
    offset = phase * m // l  # [l] floor(p·m/l)
    taps = torch.arange(-half + 1, half + 1, dtype=torch.float64)  # [K]
    dist = (phase * m / l - offset)[:, None] - taps[None, :]  # [l, K] distance from the output instant
    weights = cutoff * torch.sinc(cutoff * dist) * _kaiser(dist / half, beta)
    columns = offset[:, None] + 1 + torch.arange(k)[None, :]  # [l, K]
    bank = torch.zeros(l, m + k, dtype=torch.float64)
    bank.scatter_(1, columns, weights)
    return bank


def _filter_width(orig_rate: int, new_rate: int, zero_crossings: int, rolloff: float) -> tuple[float, int]:
    """(low-pass cut-off in units of the input Nyquist, filter half-width in input samples) of :func:`resample`."""
    cutoff = rolloff * min(1.0, new_rate / orig_rate)
    return cutoff, int(math.ceil(zero_crossings / cutoff))


def resampler_reach(orig_rate: int, new_rate: int, zero_crossings: int = 24, rolloff: float = 0.94) -> int:
    """Input samples the resampler reads beyond an output instant (its filter half-width)."""
    return _filter_width(orig_rate, new_rate, zero_crossings, rolloff)[1]


def resample(
    waveform: torch.Tensor,
    orig_rate: int,
    new_rate: int,
    zero_crossings: int = 24,
    rolloff: float = 0.94,
    beta: float = 8.6,
    max_phases: int = 4096,
    max_bank_elems: int = 1 << 22,
    max_chunk_elems: int = 1 << 22,
) -> torch.Tensor:
    """Band-limited resampling of ``waveform [..., N]`` to ``[..., ceil(N·new/orig)]``.

    Polyphase windowed-sinc interpolation (Kaiser window, ``zero_crossings`` lobes each side),
    low-pass cut-off at ``rolloff`` times the lower of the two Nyquist frequencies, so
    downsampling does not alias. The rate ratio is reduced to m/l with at most
    ``max_phases`` phases and a bank of at most ``max_bank_elems`` taps; this is exact for
    every common rate (44 100 → 51 200 is 441/512, 11 025 → 51 200 is 441/2048). An odd pair
    (e.g. 44 099 Hz) is approximated: over 8 k…192 k inputs the rate error stays below
    2.5e-4 relative (0.4 cent, under 4 ms over 15 s). The signal is zero outside [0, N).
    Computed in float32 (float64 for float64 input).
    """
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return waveform.clone()
    exact = Fraction(orig_rate, new_rate)
    phases_cap = min(max_phases, math.isqrt(int(max_bank_elems / max(float(exact), 1.0))))  # bank ≈ l·(m + K)
    ratio = exact.limit_denominator(max(1, phases_cap))
    m, l = ratio.numerator, ratio.denominator  # m input samples per l output samples
    n_in = waveform.shape[-1]
    n_out = resampled_length(n_in, orig_rate, new_rate)
    cutoff, half = _filter_width(orig_rate, new_rate, zero_crossings, rolloff)
    dtype = torch.float64 if waveform.dtype == torch.float64 else torch.float32
    bank = _phase_bank(m, l, half, cutoff, beta).to(device=waveform.device, dtype=dtype).T  # [m + K, l]
    lead = waveform.shape[:-1]
    n_win = -(-n_out // l)  # windows q = 0 .. n_win-1, each giving l outputs
    right = max(0, n_win * m + bank.shape[0] - half - n_in)
    x = torch.nn.functional.pad(waveform.reshape(-1, n_in).to(dtype), (half, right))  # x[:, i + half] = sample i
    windows = x.unfold(-1, bank.shape[0], m)[:, :n_win]  # [C, n_win, m + K] (a view)
    out = torch.empty(x.shape[0], n_win, l, dtype=dtype, device=x.device)
    step = max(1, max_chunk_elems // (x.shape[0] * bank.shape[0]))
    for q in range(0, n_win, step):
        out[:, q : q + step] = windows[:, q : q + step] @ bank  # [C, step, l]
    return out.reshape(x.shape[0], n_win * l)[:, :n_out].reshape(*lead, n_out).to(waveform.dtype)


# -- voice-track preparation ----------------------------------------------------------------
def downmix_to_stereo(waveform: torch.Tensor) -> torch.Tensor:
    """[C, N] with C in (1, 2, 6, 8) -> [2, N] (coefficients in the module docstring)."""
    c = waveform.shape[0]
    if c == 1:
        return waveform.expand(2, -1).clone()
    if c == 2:
        return waveform.clone()
    if c == 6:
        fl, fr, fc, _lfe, bl, br = waveform
        left, right = fl + _G * (fc + bl), fr + _G * (fc + br)
        return torch.stack([left, right]) / (1 + 2 * _G)
    if c == 8:
        fl, fr, fc, _lfe, bl, br, sl, sr = waveform
        left, right = fl + _G * (fc + bl + sl), fr + _G * (fc + br + sr)
        return torch.stack([left, right]) / (1 + 3 * _G)
    raise ValueError(
        f"audio has {c} channels; supported layouts are mono (1), stereo (2), 5.1 (6) and 7.1 (8). "
        f"Convert the file to stereo first (e.g. ffmpeg -ac 2)"
    )


def downmix_to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """[C, N] -> [1, N]: the mean of the stereo downmix (what the reference feeds its audio VAE)."""
    if waveform.shape[0] == 1:
        return waveform.clone()
    return downmix_to_stereo(waveform).mean(dim=0, keepdim=True)


@dataclass(frozen=True)
class PreparedAudio:
    waveform: torch.Tensor  # [2, target_samples] float32 at sample_rate: the mono voice on both channels
    sample_rate: int
    trimmed: bool  # input was longer than the clip: the tail was cut
    padded: bool  # input was shorter than the clip: zeros were appended
    silent: bool  # peak below -60 dBFS: the track is (nearly) silent
    source_duration_s: float  # length of the input before trimming/padding


def _as_channels_first(waveform: torch.Tensor) -> torch.Tensor:
    """Accept [N], [C, N] or ComfyUI's [1, C, N]; return [C, N] (a view, dtype unchanged)."""
    if not isinstance(waveform, torch.Tensor):
        raise ValueError(f"waveform must be a torch.Tensor, got {type(waveform).__name__}")
    if waveform.dim() == 3:
        if waveform.shape[0] != 1:
            raise ValueError(
                f"expected one audio track, got a batch of {waveform.shape[0]} (shape {tuple(waveform.shape)})"
            )
        waveform = waveform[0]
    elif waveform.dim() == 1:
        waveform = waveform[None]
    elif waveform.dim() != 2:
        raise ValueError(f"waveform must be [N], [C, N] or [1, C, N], got shape {tuple(waveform.shape)}")
    if waveform.shape[-1] == 0:
        raise ValueError("the audio track is empty (0 samples); load a file with sound")
    if waveform.shape[0] > 16:
        raise ValueError(f"waveform has {waveform.shape[0]} channels; did you pass [N, C] instead of [C, N]?")
    return waveform


def _check_rate(sample_rate: int) -> int:
    sample_rate = int(sample_rate)
    if not MIN_INPUT_RATE <= sample_rate <= MAX_INPUT_RATE:
        raise ValueError(f"audio sample rate {sample_rate} Hz is outside {MIN_INPUT_RATE}..{MAX_INPUT_RATE} Hz; "
                         "resample the track to 44.1 or 48 kHz first (e.g. ffmpeg -ar 48000)")
    return sample_rate


def input_samples_needed(target_samples: int, sample_rate: int, target_rate: int) -> int:
    """Input samples that determine the first `target_samples` output samples exactly (the resampler's
    filter reaches `resampler_reach` samples past the last output instant)."""
    return -(-int(target_samples) * int(sample_rate) // int(target_rate)) + resampler_reach(sample_rate, target_rate) + 1


def resampled_length(num_samples: int, sample_rate: int, target_rate: int = AUDIO_NOMINAL_RATE) -> int:
    """Samples a track of `num_samples` at `sample_rate` has after :func:`resample` to `target_rate`."""
    return -(-int(num_samples) * int(target_rate) // int(sample_rate))


def voice_frames(num_samples: int, sample_rate: int, max_seconds: float) -> int:
    """Audio latent frames of a voice-driven clip (the reference's rule): the track at 51.2 kHz, cut to
    `max_seconds`, then whole 2048-sample latent frames. A 4.0 s voice gives 100 frames (T = 25)."""
    available = resampled_length(num_samples, _check_rate(sample_rate), AUDIO_NOMINAL_RATE)
    wanted = int(float(max_seconds) * AUDIO_NOMINAL_RATE)
    return min(available, wanted) // AUDIO_HOP


def prepare_voice_track(
    waveform: torch.Tensor,
    sample_rate: int,
    target_rate: int,
    target_samples: int,
) -> PreparedAudio:
    """Turn a user's track into the VAE's input [2, target_samples] at ``target_rate``.

    ``sample_rate`` may be 8 kHz … 192 kHz; channels mono/stereo/5.1/7.1. Only the part of the
    track the clip needs (plus the resampler's reach) is read; it is downmixed to mono and
    duplicated to both channels, resampled, then cut or zero-padded to ``target_samples`` (flags
    say which); ``silent`` is set when its peak is below -60 dBFS.
    """
    sample_rate = _check_rate(sample_rate)
    if target_rate <= 0 or target_samples <= 0:
        raise ValueError(f"target_rate and target_samples must be positive, got {target_rate}, {target_samples}")
    x = _as_channels_first(waveform)  # [C, N] view of the caller's tensor
    n_in = x.shape[-1]
    source_duration_s = n_in / sample_rate
    x = x[:, : input_samples_needed(target_samples, sample_rate, target_rate)].float()  # cut BEFORE any copy
    if not torch.isfinite(x).all():
        raise ValueError("the audio track contains NaN or infinite samples; check the node that produced it "
                         "or re-export the file")
    x = downmix_to_mono(x)  # [1, n]
    x = resample(x, sample_rate, target_rate)
    n = resampled_length(n_in, sample_rate, target_rate)  # length of the whole track at target_rate
    trimmed, padded = n > target_samples, n < target_samples
    x = x[:, :target_samples]
    if x.shape[-1] < target_samples:
        x = torch.nn.functional.pad(x, (0, target_samples - x.shape[-1]))
    silent = bool(x.abs().max() < SILENCE_PEAK)
    return PreparedAudio(x.expand(2, -1).contiguous(), int(target_rate), trimmed, padded, silent, source_duration_s)


def voice_for_video(waveform: torch.Tensor, sample_rate: int, video_frames: int) -> torch.Tensor:
    """The user's original track [C, N] (own rate and channels) cut or zero-padded to `video_frames` / 25 s,
    for muxing the real recording with the generated picture."""
    x = _as_channels_first(waveform)
    keep = int(video_frames) * int(sample_rate) // FPS
    x = x[:, :keep].float()
    if x.shape[-1] < keep:
        x = torch.nn.functional.pad(x, (0, keep - x.shape[-1]))
    return x.contiguous()
