"""Sizes, durations and latent shapes (MODEL_SPEC §4.5, §5)."""
from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from happyhorse_core import geometry as geo
from happyhorse_core.geometry import ClipGeometry, SizeRoundedWarning

# Short side 256 / 512 / 1088, long side = short * aspect rounded half-up to 32 (geometry docstring).
# The 16:9 row is given by the spec (448x256, 896x512, 1920x1088).
EXPECTED_PRESETS = {
    ("16:9", "256p"): (448, 256), ("16:9", "540p"): (896, 512), ("16:9", "1080p"): (1920, 1088),
    ("9:16", "256p"): (256, 448), ("9:16", "540p"): (512, 896), ("9:16", "1080p"): (1088, 1920),
    ("1:1", "256p"): (256, 256), ("1:1", "540p"): (512, 512), ("1:1", "1080p"): (1088, 1088),
    ("4:3", "256p"): (352, 256), ("4:3", "540p"): (672, 512), ("4:3", "1080p"): (1440, 1088),
    ("3:4", "256p"): (256, 352), ("3:4", "540p"): (512, 672), ("3:4", "1080p"): (1088, 1440),
}


def test_preset_table():
    assert geo.PRESET_SIZES == EXPECTED_PRESETS
    for (aspect, res), (w, h) in EXPECTED_PRESETS.items():
        assert geo.preset_size(aspect, res) == (w, h)
        assert w % 32 == 0 and h % 32 == 0
        g = ClipGeometry.from_preset(aspect, res, 4)
        assert (g.width, g.height) == (w, h)
        assert g.latent_h % 2 == 0 and g.latent_w % 2 == 0


@pytest.mark.parametrize("aspect,res", [("21:9", "256p"), ("16:9", "720p"), ("", "")])
def test_unknown_preset(aspect, res):
    with pytest.raises(ValueError, match="unknown"):
        geo.preset_size(aspect, res)


@pytest.mark.parametrize(
    "w,h,seconds,latent_hw,per_frame,tokens",
    [
        (448, 256, 4, (16, 28), 112, 2912),  # spec §5 examples
        (896, 512, 4, (32, 56), 448, 11648),
        (1920, 1088, 4, (68, 120), 2040, 53040),
    ],
)
def test_spec_token_counts(w, h, seconds, latent_hw, per_frame, tokens):
    g = ClipGeometry(w, h, seconds)
    assert (g.latent_h, g.latent_w) == latent_hw
    assert g.tokens_per_frame == per_frame
    assert g.video_tokens == tokens


def test_durations_and_latent_shapes():
    g4 = ClipGeometry(448, 256, 4)
    assert (g4.frames, g4.latent_frames, g4.decoded_frames, g4.audio_frames) == (101, 26, 101, 101)
    assert g4.video_latent_shape == (1, 48, 26, 16, 28)
    assert g4.audio_latent_shape == (1, 101, 64)
    assert g4.duration_s == pytest.approx(4.04)
    assert g4.audio_samples_nominal == 206848
    assert g4.audio_samples_output == int(206848 * 441 / 512)
    g5 = ClipGeometry(448, 256, 5)  # 5 s -> 126 frames -> T = 32 (spec §5); decoders give 4(T-1)+1
    assert (g5.frames, g5.latent_frames, g5.decoded_frames) == (126, 32, 125)
    g2 = ClipGeometry(448, 256, 2)
    assert (g2.frames, g2.latent_frames, g2.decoded_frames) == (51, 13, 49)


def test_resolve_size_floors_with_warning():
    with pytest.warns(SizeRoundedWarning, match=r"480x272.*480x256"):
        assert geo.resolve_size(480, 272) == (480, 256)
    with pytest.warns(SizeRoundedWarning):
        g = ClipGeometry.from_request(1930, 1090, 3)
    assert (g.width, g.height, g.seconds) == (1920, 1088, 3)


def test_resolve_size_exact_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert geo.resolve_size(448, 256) == (448, 256)
        assert geo.resolve_size(1088, 1920) == (1088, 1920)


@pytest.mark.badinput
@pytest.mark.parametrize(
    "w,h,message",
    [
        (0, 256, "must be positive"),
        (448, -32, "must be positive"),
        (20, 256, "minimum is 32"),
        (1952, 256, "maximum side is 1920"),
        (256, 2048, "maximum side is 1920"),
        (1920, 1920, "exceeds the 1080p-class limit"),
        (1600, 1600, "exceeds the 1080p-class limit"),
        (256.5, 256, "whole number"),
        (True, 256, "boolean"),
        ("448", 256, "whole number"),
        (float("nan"), 256, "whole number"),
    ],
)
def test_resolve_size_rejects(w, h, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SizeRoundedWarning)
        with pytest.raises(ValueError, match=message):
            geo.resolve_size(w, h)


@pytest.mark.badinput
@pytest.mark.parametrize("seconds,message", [(0, "between 1 and 15"), (-3, "between 1 and 15"),
                                             (16, "between 1 and 15"), (float("nan"), "between 1 and 15"),
                                             (None, "must be a number"), ("2", "must be a number"),
                                             (True, "must be a number")])
def test_validate_seconds_rejects(seconds, message):
    with pytest.raises(ValueError, match=message):
        geo.validate_seconds(seconds)


def test_validate_seconds_and_steps_accept():
    assert geo.validate_seconds(1) == 1 and geo.validate_seconds(15) == 15 and geo.validate_seconds(2.0) == 2
    assert geo.validate_seconds(2.5) == 2.5 and isinstance(geo.validate_seconds(2.0), int)
    assert geo.validate_steps(1) == 1 and geo.validate_steps(32) == 32


@pytest.mark.badinput
@pytest.mark.parametrize("steps,message", [(0, "at least 1"), (-8, "at least 1"), (1.5, "whole number")])
def test_validate_steps_rejects(steps, message):
    with pytest.raises(ValueError, match=message):
        geo.validate_steps(steps)


@pytest.mark.badinput
def test_clip_geometry_constructor_is_strict():
    with pytest.raises(ValueError, match="from_request"):
        ClipGeometry(480, 272, 2)
    with pytest.raises(ValueError, match="between 1 and 15"):
        ClipGeometry(448, 256, 0)
    g = ClipGeometry(448, 256, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.width = 512  # type: ignore[misc]


def test_sr_geometry():
    base = ClipGeometry(448, 256, 4)
    sr540, sr1080 = base.sr_geometry("540p"), base.sr_geometry("1080p")
    assert (sr540.width, sr540.height, sr540.latent_w, sr540.latent_h) == (896, 512, 56, 32)  # spec §4.5
    assert (sr1080.width, sr1080.height, sr1080.latent_w, sr1080.latent_h) == (1920, 1088, 120, 68)
    assert sr1080.video_latent_shape == (1, 48, 26, 68, 120) and sr1080.seconds == 4
    assert base.sr_geometry((896, 512)) == sr540
    portrait = ClipGeometry.from_preset("9:16", "256p", 2).sr_geometry("1080p")
    assert (portrait.width, portrait.height) == (1088, 1920)
    custom = ClipGeometry(480, 256, 2).sr_geometry("540p")  # not a preset: scale the short side
    assert (custom.width, custom.height) == (960, 512)


@pytest.mark.badinput
def test_sr_geometry_rejects():
    base = ClipGeometry(896, 512, 2)
    with pytest.raises(ValueError, match="only upscales"):
        base.sr_geometry((448, 256))
    with pytest.raises(ValueError, match="unknown SR resolution"):
        base.sr_geometry("720p")
    with pytest.raises(ValueError, match="only upscales"):
        base.sr_geometry("256p")


_values = st.one_of(
    st.integers(min_value=-100, max_value=5000),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.text(max_size=3),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(w=_values, h=_values, seconds=st.one_of(st.integers(-5, 30), st.floats(-2, 20), st.none()))
def test_fuzz_only_value_errors(w, h, seconds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SizeRoundedWarning)
        try:
            g = ClipGeometry.from_request(w, h, seconds)
        except ValueError:
            return
    assert g.width % 32 == 0 and g.height % 32 == 0
    assert 0 <= w - g.width < 32 and 0 <= h - g.height < 32
    assert 32 <= min(g.width, g.height) and max(g.width, g.height) <= 1920 and g.width * g.height <= 1920 * 1088
    assert 1 <= g.seconds <= 15
    _, c, t, lh, lw = g.video_latent_shape
    assert (c, lh * 16, lw * 16) == (48, g.height, g.width)
    assert 4 * (t - 1) + 1 == g.decoded_frames <= g.frames == g.audio_frames
    assert g.video_tokens == t * (lh // 2) * (lw // 2) > 0
    assert math.isclose(g.duration_s, g.frames / 25)


def test_fractional_seconds_round_to_whole_frames():
    assert ClipGeometry(448, 256, 2.5).frames == 64  # round(62.5) half-up + 1
    assert ClipGeometry(448, 256, 1.02).frames == 27 and ClipGeometry(448, 256, 3).frames == 76


def test_a_four_second_voice_gives_the_reference_latent_frames():
    """Reference (video_generate.py): the voice at 51.2 kHz is cut to `seconds`, encoded, and its latent
    length is the clip: 4.0 s -> 204800 samples -> 100 audio frames -> (100 - 1) // 4 + 1 = 25 latent frames."""
    base = ClipGeometry.from_preset("16:9", "256p", 5)
    for rate in (8000, 22050, 44100, 48000, 51200):
        g = base.with_voice(4 * rate, rate)
        assert (g.audio_frames, g.latent_frames, g.decoded_frames) == (100, 25, 97)
        assert g.video_latent_shape == (1, 48, 25, 16, 28) and g.audio_latent_shape == (1, 100, 64)
    # a long voice is cut to the requested seconds; a short one makes a shorter clip
    assert ClipGeometry(448, 256, 3).with_voice(60 * 16000, 16000).audio_frames == 75
    assert ClipGeometry(448, 256, 5).with_voice(int(1.5 * 16000), 16000).audio_frames == 37
    assert ClipGeometry(448, 256, 2).with_voice(4 * 16000, 16000).sr_geometry("540p").audio_frames == 50
    with pytest.raises(ValueError, match="at least 0.2 s"):
        base.with_voice(1000, 16000)
