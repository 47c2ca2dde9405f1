"""Clip sizes, durations and the latent constants: the one home of every fact about shapes.

Constants: 25 fps; Wan2.2 video latents have 48 channels (16x spatial, 4x temporal compression)
with per-channel mean/std (the DiT works on (z - mean) / std); Stable Audio Open latents have 64
channels, 2048 samples per latent frame, so the audio latent is defined at 25 x 2048 = 51 200 Hz
and decoded audio is re-timed to 44 100 Hz. Every other module imports these from here.

The model (MODEL_SPEC §5) runs at a fixed 25 fps. A clip of ``s`` seconds (fractions allowed,
rounded to whole frames) has ``round(25·s) + 1`` pixel frames; a voice-driven clip instead takes
its length from the voice track, as the reference does: F = (track samples at 51.2 kHz, cut to
``s``) // 2048 audio frames (a 4.0 s voice: F = 100, T = 25); the Wan2.2 VAE compresses time by 4 and space by 16, and the DiT
patches the latent 2×2, so the pixel size is always a multiple of 32 and

    T = (frames − 1) // 4 + 1          latent video frames
    h = H // 16 // 2 · 2               latent height (w likewise)
    F = frames                         audio latent frames (one per video frame, 64 channels)
    tokens per latent frame = (h/2)·(w/2)

The decoders return ``4·(T − 1) + 1`` frames, which equals ``frames`` only when ``25·s`` is a
multiple of 4 (s = 4, 8, 12); e.g. 5 s → 126 frames → T = 32 → 125 decoded frames.

Presets (not in the reference, our own table). Rule: the short side is 256 / 512 / 1088
pixels for "256p" / "540p" / "1080p"; the long side is short·(a/b) for aspect a:b, rounded
half-up to a multiple of 32. This reproduces the reference sizes 448×256, 896×512 and
1920×1088 for 16:9 (see PRESET_SIZES for the whole table).

Custom sizes are floored to multiples of 32 (as the reference does) with a
:class:`SizeRoundedWarning`. Limits: each side 32 … 1920 pixels and at most 1920·1088 pixels
in total (the 1080p class; 1088×1920 portrait is allowed); seconds are 1 … 15 (a voice-driven
clip may be shorter: down to MIN_VOICE_FRAMES).
"""
from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass
from typing import Optional

FPS = 25
VAE_STRIDE_T = 4  # Wan2.2 VAE temporal compression
VAE_STRIDE_HW = 16  # Wan2.2 VAE spatial compression
PATCH_HW = 2  # DiT 2x2 spatial patch
SIZE_MULTIPLE = VAE_STRIDE_HW * PATCH_HW  # 32: pixel sizes are multiples of this
VIDEO_LATENT_CHANNELS = 48
AUDIO_LATENT_CHANNELS = 64
AUDIO_HOP = 2048  # Stable Audio Open VAE samples per latent frame
AUDIO_NOMINAL_RATE = FPS * AUDIO_HOP  # 51 200 Hz: the rate the audio latent is defined at
AUDIO_OUTPUT_RATE = 44_100  # the decoded waveform is re-timed to this rate (MODEL_SPEC §7.3)

# Wan2.2 VAE per-channel latent statistics (VIDEO_LATENT_CHANNELS of each). The DiT works on
# (z - mean) / std; the decoder undoes that before decoding (MODEL_SPEC §7.1, §7.2).
WAN22_LATENT_MEAN: tuple[float, ...] = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_LATENT_STD: tuple[float, ...] = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)

MIN_SECONDS, MAX_SECONDS = 1, 15
MIN_VOICE_FRAMES = 5  # 0.2 s: the shortest voice track that still makes a clip (2 latent frames)
MIN_SIDE = SIZE_MULTIPLE
MAX_SIDE = 1920
MAX_PIXELS = 1920 * 1088  # 2 088 960 pixels, the 1080p class

ASPECTS: dict[str, tuple[int, int]] = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1), "4:3": (4, 3), "3:4": (3, 4)}
RESOLUTION_SHORT_SIDE: dict[str, int] = {"256p": 256, "540p": 512, "1080p": 1088}


class SizeRoundedWarning(UserWarning):
    """A requested pixel size was floored to a multiple of 32."""


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _as_int(value: object, name: str) -> int:
    """Accept Python/numpy integers and integral floats; anything else is a ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number, got the boolean {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        pass
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise ValueError(f"{name} must be a whole number, got {value!r}")


def preset_size(aspect: str, resolution: str) -> tuple[int, int]:
    """(width, height) in pixels of a preset, e.g. ("16:9", "256p") -> (448, 256)."""
    if aspect not in ASPECTS:
        raise ValueError(f"unknown aspect {aspect!r}; choose one of {', '.join(ASPECTS)}")
    if resolution not in RESOLUTION_SHORT_SIDE:
        raise ValueError(f"unknown resolution {resolution!r}; choose one of {', '.join(RESOLUTION_SHORT_SIDE)}")
    a, b = ASPECTS[aspect]
    short = RESOLUTION_SHORT_SIDE[resolution]
    long = _round_half_up(short * max(a, b) / min(a, b) / SIZE_MULTIPLE) * SIZE_MULTIPLE
    return (long, short) if a >= b else (short, long)


PRESET_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    (aspect, res): preset_size(aspect, res) for aspect in ASPECTS for res in RESOLUTION_SHORT_SIDE
}


def _check_limits(width: int, height: int) -> None:
    for name, side in (("width", width), ("height", height)):
        if side < MIN_SIDE:
            raise ValueError(f"{name} {side} px is too small: the minimum is {MIN_SIDE} px (one 2x2 latent patch)")
        if side > MAX_SIDE:
            raise ValueError(f"{name} {side} px is too large: the maximum side is {MAX_SIDE} px (1080p class)")
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"{width}x{height} = {width * height} pixels exceeds the 1080p-class limit of {MAX_PIXELS} "
            f"(1920x1088); choose a smaller size or a preset"
        )


def resolve_size(width: int, height: int) -> tuple[int, int]:
    """Validate a requested pixel size and floor it to multiples of 32.

    Warns (SizeRoundedWarning) when flooring changed the size; raises ValueError for
    non-integers, zero/negative sizes, sides under 32 or over 1920 px, or more than 1920·1088
    pixels (limits are checked on the floored size).
    """
    w, h = _as_int(width, "width"), _as_int(height, "height")
    if w <= 0 or h <= 0:
        raise ValueError(f"width and height must be positive, got {w}x{h}")
    for name, side in (("width", w), ("height", h)):
        if side < MIN_SIDE:  # before flooring, so the message names the requested value, not 0
            raise ValueError(f"{name} {side} px is too small: the minimum is {MIN_SIDE} px (one 2x2 latent patch)")
    rw, rh = w // SIZE_MULTIPLE * SIZE_MULTIPLE, h // SIZE_MULTIPLE * SIZE_MULTIPLE
    _check_limits(rw, rh)
    if (rw, rh) != (w, h):
        warnings.warn(
            f"size {w}x{h} is not a multiple of {SIZE_MULTIPLE} (VAE stride 16 x patch 2); using {rw}x{rh}",
            SizeRoundedWarning,
            stacklevel=2,
        )
    return rw, rh


def validate_seconds(seconds: float) -> int | float:
    """Clip duration in seconds, 1 … 15 (fps is fixed at 25); whole values come back as int."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) and not hasattr(seconds, "__index__"):
        raise ValueError(f"seconds must be a number between {MIN_SECONDS} and {MAX_SECONDS}, got {seconds!r}")
    s = float(seconds)
    if not math.isfinite(s) or not MIN_SECONDS <= s <= MAX_SECONDS:
        raise ValueError(f"seconds must be between {MIN_SECONDS} and {MAX_SECONDS}, got {seconds!r}")
    return int(s) if s.is_integer() else s


def validate_steps(steps: int) -> int:
    """Number of sampler steps: a whole number >= 1."""
    n = _as_int(steps, "steps")
    if n < 1:
        raise ValueError(f"steps must be at least 1, got {n}")
    return n


@dataclass(frozen=True)
class ClipGeometry:
    """A validated clip size: width/height in pixels (multiples of 32) and whole seconds.

    Build it with :meth:`from_request` (floors with a warning) or :meth:`from_preset`; the
    constructor itself only accepts already-valid values.
    """

    width: int
    height: int
    seconds: int | float
    voice_frames: Optional[int] = None  # audio latent frames of a voice-driven clip (replaces round(25·s) + 1)

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            object.__setattr__(self, name, _as_int(getattr(self, name), name))
        object.__setattr__(self, "seconds", validate_seconds(self.seconds))
        if self.voice_frames is not None:
            f = _as_int(self.voice_frames, "voice_frames")
            if not MIN_VOICE_FRAMES <= f <= FPS * MAX_SECONDS + 1:
                raise ValueError(f"a voice-driven clip needs {MIN_VOICE_FRAMES}..{FPS * MAX_SECONDS + 1} audio frames "
                                 f"({MIN_VOICE_FRAMES / FPS:.1f} s or more of voice), got {f}")
            object.__setattr__(self, "voice_frames", f)
        if self.width % SIZE_MULTIPLE or self.height % SIZE_MULTIPLE:
            raise ValueError(
                f"ClipGeometry needs multiples of {SIZE_MULTIPLE}, got {self.width}x{self.height}; "
                f"use ClipGeometry.from_request() to floor a custom size"
            )
        _check_limits(self.width, self.height)

    @classmethod
    def from_request(cls, width: int, height: int, seconds: int) -> "ClipGeometry":
        w, h = resolve_size(width, height)
        return cls(w, h, validate_seconds(seconds))

    @classmethod
    def from_preset(cls, aspect: str, resolution: str, seconds: int) -> "ClipGeometry":
        w, h = preset_size(aspect, resolution)
        return cls(w, h, validate_seconds(seconds))

    def with_voice(self, num_samples: int, sample_rate: int) -> "ClipGeometry":
        """This size, with the length a voice track of `num_samples` at `sample_rate` asks for (at most
        `seconds`): shorter voice, shorter clip; longer voice, cut to `seconds`."""
        from .media.audio import voice_frames
        f = voice_frames(num_samples, sample_rate, self.seconds)
        if f < MIN_VOICE_FRAMES:
            raise ValueError(f"the voice track lasts {num_samples / sample_rate:.2f} s; a voice-driven clip needs at "
                             f"least {MIN_VOICE_FRAMES / FPS:.1f} s of voice")
        return ClipGeometry(self.width, self.height, self.seconds, f)

    # -- time ------------------------------------------------------------------------------
    @property
    def frames(self) -> int:
        """Pixel frames requested: round(25·seconds) + 1, or the voice track's frames."""
        if self.voice_frames is not None:
            return self.voice_frames
        return _round_half_up(FPS * self.seconds) + 1

    @property
    def latent_frames(self) -> int:
        """T = (frames − 1)//4 + 1."""
        return (self.frames - 1) // VAE_STRIDE_T + 1

    @property
    def decoded_frames(self) -> int:
        """Frames the video decoders return: 4·(T − 1) + 1 (≤ frames)."""
        return VAE_STRIDE_T * (self.latent_frames - 1) + 1

    @property
    def audio_frames(self) -> int:
        """F = frames: one 64-channel audio latent per video frame."""
        return self.frames

    @property
    def duration_s(self) -> float:
        return self.frames / FPS

    @property
    def audio_samples_nominal(self) -> int:
        """Decoded waveform length at the nominal 51 200 Hz: 2048·F."""
        return AUDIO_HOP * self.audio_frames

    @property
    def audio_samples_output(self) -> int:
        """Waveform length after re-timing to 44 100 Hz: int(2048·F·441/512)."""
        return self.audio_samples_nominal * 441 // 512

    # -- space -----------------------------------------------------------------------------
    @property
    def latent_h(self) -> int:
        return self.height // VAE_STRIDE_HW // PATCH_HW * PATCH_HW

    @property
    def latent_w(self) -> int:
        return self.width // VAE_STRIDE_HW // PATCH_HW * PATCH_HW

    @property
    def tokens_per_frame(self) -> int:
        return (self.latent_h // PATCH_HW) * (self.latent_w // PATCH_HW)

    @property
    def video_tokens(self) -> int:
        return self.latent_frames * self.tokens_per_frame

    @property
    def video_latent_shape(self) -> tuple[int, int, int, int, int]:
        """[1, 48, T, h, w]."""
        return (1, VIDEO_LATENT_CHANNELS, self.latent_frames, self.latent_h, self.latent_w)

    @property
    def audio_latent_shape(self) -> tuple[int, int, int]:
        """[1, F, 64] (time-major)."""
        return (1, self.audio_frames, AUDIO_LATENT_CHANNELS)

    # -- super-resolution ------------------------------------------------------------------
    def sr_geometry(self, target: str | tuple[int, int]) -> "ClipGeometry":
        """Geometry of the SR stage (MODEL_SPEC §4.5), same duration.

        ``target`` is a resolution name ("540p", "1080p") or an explicit (width, height).
        A name keeps the aspect: a preset size maps to the same aspect's preset; any other
        size scales its short side to the class short side and rounds the long side half-up
        to a multiple of 32. Sizes are then floored as sr_latent = sr_px // 16 // 2 · 2.
        The SR size must not be smaller than the base size on either side.
        """
        if isinstance(target, str):
            sr_w, sr_h = self._sr_size_for_resolution(target)
        else:
            if len(target) != 2:
                raise ValueError(f"SR target must be a resolution name or (width, height), got {target!r}")
            sr_w, sr_h = resolve_size(*target)
        if sr_w < self.width or sr_h < self.height:
            raise ValueError(
                f"SR size {sr_w}x{sr_h} is smaller than the base size {self.width}x{self.height}; "
                f"the SR stage only upscales"
            )
        return ClipGeometry(sr_w, sr_h, self.seconds, self.voice_frames)

    def _sr_size_for_resolution(self, resolution: str) -> tuple[int, int]:
        if resolution not in RESOLUTION_SHORT_SIDE:
            raise ValueError(f"unknown SR resolution {resolution!r}; choose one of {', '.join(RESOLUTION_SHORT_SIDE)}")
        for (aspect, _res), size in PRESET_SIZES.items():
            if size == (self.width, self.height):
                return preset_size(aspect, resolution)
        short = RESOLUTION_SHORT_SIDE[resolution]
        long_px = _round_half_up(short * max(self.width, self.height) / min(self.width, self.height) / SIZE_MULTIPLE)
        long_px *= SIZE_MULTIPLE
        size = (long_px, short) if self.width >= self.height else (short, long_px)
        _check_limits(*size)
        return size


def video_frames_for_audio(audio_frames: int) -> int:
    """Frames the video decoders give for a clip whose audio latent has F frames: 4·((F−1)//4) + 1."""
    return VAE_STRIDE_T * ((int(audio_frames) - 1) // VAE_STRIDE_T) + 1


def video_matched_samples(audio_frames: int) -> int:
    """44.1 kHz samples lasting exactly as long as the decoded video of a clip with `audio_frames` latents.

    F audio latents belong to T = (F - 1)//4 + 1 latent frames, which decode to 4(T - 1) + 1 video
    frames at 25 fps; the audio of the same clip lasts F/25 s, i.e. up to 0.16 s longer. Cutting each
    clip's waveform to this length keeps a batch joined into one file in sync clip by clip.
    """
    if audio_frames < 1:
        raise ValueError(f"an audio latent needs at least 1 frame, got {audio_frames}")
    return video_frames_for_audio(audio_frames) * AUDIO_OUTPUT_RATE // FPS


MAX_BATCH_SECONDS = 60  # clips x seconds per run (16 x 3 s, 4 x 15 s)
MAX_DECODED_BYTES = 24 * 2**30  # the decoded batch as a float32 IMAGE [frames, H, W, 3] in system RAM


def check_batch(batch_size: int, geometry: "ClipGeometry") -> None:
    """batch_size x clip length is bounded before any latent exists: a batch is sampled clip after clip
    but decoded into ONE IMAGE batch in system RAM, so its size must stay reasonable."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    seconds = batch_size * geometry.seconds
    frames = batch_size * geometry.decoded_frames
    gib = frames * geometry.width * geometry.height * 3 * 4 / 2**30
    if seconds > MAX_BATCH_SECONDS or gib * 2**30 > MAX_DECODED_BYTES:
        raise ValueError(f"batch_size {batch_size} x {geometry.seconds} s at {geometry.width}x{geometry.height} is "
                         f"{seconds} s of video ({frames} frames, {gib:.1f} GiB once decoded); one run may hold at "
                         f"most {MAX_BATCH_SECONDS} s and {MAX_DECODED_BYTES // 2**30} GiB: lower batch_size or "
                         "seconds, or queue several runs")
