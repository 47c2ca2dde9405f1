"""Hosted HappyHorse 1.0: request bodies, input checks, prompt limits, key loading/redaction and picture
encoding, without any server (happyhorse_core.hosted.spec / keys / media_in)."""
from __future__ import annotations

import base64
import io
import logging

import av
import numpy as np
import pytest
import torch

from happyhorse_core.hosted import media_in
from happyhorse_core.hosted.keys import MissingKeyError, RedactingFilter, load_api_key, redact
from happyhorse_core.hosted.spec import (CUSTOM_REGION, REGIONS, HostedRequest, RequestError, base_url_for,
                                         build_body, check, prompt_warning, uses_oss)
from happyhorse_core.testing.dashscope_mock import fake_api_key

pytestmark = pytest.mark.api
IMG = "data:image/png;base64,AAAA"


def test_bodies_per_model_are_exactly_the_documented_shapes():
    t2v = HostedRequest("t2v", "a horse", "720P", "9:16", 7, 42, False)
    assert build_body(t2v) == {"model": "happyhorse-1.0-t2v", "input": {"prompt": "a horse"},
                               "parameters": {"resolution": "720P", "ratio": "9:16", "duration": 7, "seed": 42,
                                              "watermark": False}}
    i2v = HostedRequest("i2v", "", "1080P", None, 3, None, True, first_frame=IMG)
    assert build_body(i2v) == {"model": "happyhorse-1.0-i2v", "input": {"media": [{"type": "first_frame", "url": IMG}]},
                               "parameters": {"resolution": "1080P", "duration": 3, "watermark": True}}
    r2v = HostedRequest("r2v", "[Image 1] waves at character2", "720P", "1:1", 15, 0,
                        references=[IMG, "https://x/y.png"])
    assert build_body(r2v)["input"]["media"] == [{"type": "reference_image", "url": IMG},
                                                 {"type": "reference_image", "url": "https://x/y.png"}]
    assert build_body(r2v)["input"]["prompt"] == "[Image 1] waves at character2"   # never rewritten
    edit = HostedRequest("edit", "make it night", "720P", None, None, 5, False, "origin", video="oss://d/v.mp4",
                         references=[IMG])
    assert build_body(edit) == {"model": "happyhorse-1.0-video-edit",
                                "input": {"prompt": "make it night",
                                          "media": [{"type": "video", "url": "oss://d/v.mp4"},
                                                    {"type": "reference_image", "url": IMG}]},
                                "parameters": {"resolution": "720P", "seed": 5, "watermark": False,
                                               "audio_setting": "origin"}}
    assert uses_oss(edit) and not uses_oss(r2v)
    for req in (t2v, i2v, r2v, edit):
        assert check(req) == []


@pytest.mark.parametrize("req, words", [
    (HostedRequest("t2v", "x", ratio="4:5"), ["4:5", "unconfirmed_options"]),
    (HostedRequest("t2v", "x", ratio="2:1", unconfirmed=True), ["ratio must be one of"]),
    (HostedRequest("i2v", "x", ratio="16:9", first_frame=IMG), ["takes no ratio"]),
    (HostedRequest("t2v", "x", duration=2), ["3..15"]),
    (HostedRequest("t2v", "x", duration=16), ["3..15"]),
    (HostedRequest("t2v", "x", seed=2147483648), ["seed", "2147483647"]),
    (HostedRequest("t2v", "x", seed=-1), ["seed"]),
    (HostedRequest("t2v", "x", resolution="480P"), ["720P"]),
    (HostedRequest("t2v", "   "), ["needs a prompt"]),
    (HostedRequest("r2v", "x"), ["1..9 reference images", "at least one"]),
    (HostedRequest("r2v", "x", references=[IMG] * 10), ["1..9", "fewer"]),
    (HostedRequest("edit", "x", ratio=None, duration=None, video=IMG, references=[IMG] * 6), ["0..5"]),
    (HostedRequest("edit", "x", ratio=None, duration=5, video="https://v"), ["no duration"]),
    (HostedRequest("t2v", "x", audio_setting="auto"), ["video edit only"]),
    (HostedRequest("i2v", "x", ratio=None), ["first frame"]),
    (HostedRequest("i2v", "x", ratio=None, first_frame="file:///etc/passwd"), ["https://"]),
])
def test_bad_values_are_refused_before_any_request(req, words):
    with pytest.raises(RequestError) as e:
        check(req)
    for w in words:
        assert w in str(e.value)


def test_unconfirmed_ratio_passes_with_the_flag():
    assert check(HostedRequest("t2v", "x", ratio="21:9", unconfirmed=True)) == []


def test_prompt_limit_warns_for_both_readings_and_only_then():
    assert prompt_warning("a" * 5000) is None
    assert "5001 characters" in prompt_warning("a" * 5001)
    assert prompt_warning("马" * 2500) is None
    assert "2501 characters (2501 Chinese" in prompt_warning("马" * 2501)
    mixed = "马" + "a" * 2600                      # one CJK character: the 2500 reading applies
    assert "2500" in prompt_warning(mixed)
    assert prompt_warning("马" * 100 + "a" * 2300) is None
    warnings = check(HostedRequest("t2v", "a" * 6000))
    assert len(warnings) == 1 and "shorten" in warnings[0]


def test_regions_and_custom_base_url():
    assert base_url_for("Singapore (dashscope-intl)") == "https://dashscope-intl.aliyuncs.com/api/v1"
    assert base_url_for("Beijing (dashscope)") == "https://dashscope.aliyuncs.com/api/v1"
    assert base_url_for(CUSTOM_REGION, " http://127.0.0.1:9/api/v1/ ") == "http://127.0.0.1:9/api/v1"
    with pytest.raises(RequestError, match="base_url"):
        base_url_for(CUSTOM_REGION, "")
    with pytest.raises(RequestError):
        base_url_for("Mars", "")
    assert len(REGIONS) == 2


def test_key_from_env_then_file_and_a_helpful_error(tmp_path):
    key, env_key = fake_api_key("file"), fake_api_key("env")
    assert load_api_key(tmp_path, {"DASHSCOPE_API_KEY": f" {key}\n"}) == key
    (tmp_path / "dashscope_api_key.txt").write_text(f"# Model Studio\n\n{key}\n")
    assert load_api_key(tmp_path, {}) == key
    assert load_api_key(tmp_path, {"DASHSCOPE_API_KEY": env_key}) == env_key
    (tmp_path / "dashscope_api_key.txt").write_text("sk-two words here\n")
    with pytest.raises(MissingKeyError) as e:
        load_api_key(tmp_path, {})
    assert "spaces" in str(e.value) and "sk-two" not in str(e.value)
    with pytest.raises(MissingKeyError) as e:
        load_api_key(tmp_path / "nowhere", {})
    assert "DASHSCOPE_API_KEY" in str(e.value) and "dashscope_api_key.txt" in str(e.value)


def test_redaction_masks_the_key_bearer_tokens_and_key_shapes(caplog):
    key, other = fake_api_key("given"), fake_api_key("other")  # `other` is masked by its shape alone
    text = f"bad key {key}; header Authorization: Bearer {key}; other {other} end"
    clean = redact(text, key)
    assert key not in clean and other not in clean and "end" in clean
    logger = logging.getLogger("HappyHorse.hosted.test")
    logger.addFilter(RedactingFilter(key))
    with caplog.at_level(logging.INFO, logger="HappyHorse.hosted.test"):
        logger.info("using %s now", key)
    assert caplog.records and all(key not in r.getMessage() for r in caplog.records)


def _decode_picture(url: str) -> np.ndarray:
    head, data = url.split(",", 1)
    with av.open(io.BytesIO(base64.b64decode(data))) as box:
        return next(box.decode(video=0)).to_ndarray(format="rgb24")


def test_pictures_become_lossless_png_data_urls():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 320, 480, 3, generator=g)                   # IMAGE [1, H, W, 3]
    url = media_in.image_data_url(image, "first_frame", "first_frame")
    assert url.startswith("data:image/png;base64,")
    expect = (image[0] * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(_decode_picture(url), expect)


def test_too_big_png_falls_back_to_jpeg_under_the_limit(monkeypatch):
    monkeypatch.setattr(media_in, "IMAGE_MB", 0.25)                   # noise PNG of 480x400 is ~0.55 MB
    image = torch.rand(400, 480, 3, generator=torch.Generator().manual_seed(1))
    url = media_in.image_data_url(image, "reference_image", "image_1")
    assert url.startswith("data:image/jpeg;base64,")
    assert len(url) <= 0.25 * 2**20 * 4 / 3 + 40
    assert _decode_picture(url).shape == (400, 480, 3)


@pytest.mark.parametrize("shape, role, words", [
    ((299, 600), "first_frame", ["600x299", "300 px"]),
    ((399, 500), "reference_image", ["short side", "400 px"]),
    ((300, 800), "edit_reference", ["1:2.5"]),
])
def test_picture_geometry_is_checked(shape, role, words):
    with pytest.raises(RequestError) as e:
        media_in.image_data_url(torch.zeros(*shape, 3), role, "the picture")
    for w in words:
        assert w in str(e.value)


def test_source_video_limits_for_video_edit(tmp_path):
    from happyhorse_core.testing.dashscope_mock import make_fixture
    small = make_fixture(tmp_path / "small.mp4", audio=False, seconds=1.0, size=(64, 48)).read_bytes()
    with pytest.raises(RequestError) as e:
        media_in.check_video_bytes(small)
    assert "lasts 1.0 s (3..60 s allowed)" in str(e.value) and "it is 64x48" in str(e.value)
    good = make_fixture(tmp_path / "good.mp4", audio=True, seconds=3.0, size=(320, 320)).read_bytes()
    info = media_in.check_video_bytes(good)
    assert (info["width"], info["height"], round(info["fps"])) == (320, 320, 24) and 2.9 < info["seconds"] < 3.2
    with pytest.raises(RequestError, match="cannot read the source video"):
        media_in.check_video_bytes(b"\x00" * 1000)
