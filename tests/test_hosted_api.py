"""Hosted HappyHorse 1.0 protocol against the local DashScope mock (127.0.0.1, random port, started and
stopped here): exact headers and bodies, every documented failure, Cancel, capped downloads, the key in
no log line, and outputs that decode to the right frames / fps / audio."""
from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest
import torch

from happyhorse_core.hosted.errors import HostedAPIError
from happyhorse_core.hosted.run import RunOptions, fetch, generate
from happyhorse_core.hosted.spec import HostedRequest
from happyhorse_core.hosted.tasks import PollPolicy
from happyhorse_core.hosted.transport import Transport
from happyhorse_core.hosted.upload import upload
from happyhorse_core.testing.dashscope_mock import DashScopeMock, fake_api_key
from happyhorse_core.testing.dashscope_routes import CREATE

pytestmark = pytest.mark.api
KEY = fake_api_key("test")
FAST = PollPolicy(first_poll_s=0.01, backoff=1.5, max_interval_s=0.05, max_wait_s=30, retries=3,
                  retry_base_s=0.01, retry_max_s=0.05, slice_s=0.005)
T2V = HostedRequest("t2v", "A horse gallops along a beach at sunset.", "720P", "16:9", 5, 42, False)


@pytest.fixture(scope="module")
def mock():
    with DashScopeMock() as m:
        yield m


@pytest.fixture(autouse=True)
def fresh(mock):
    mock.requests.clear()
    mock.armed.clear()
    yield


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog):
    """Every test: the key appears in no log record of any logger."""
    with caplog.at_level(logging.DEBUG):
        yield
    leaked = [r.getMessage() for r in caplog.records if KEY in r.getMessage()]
    assert not leaked, leaked


def opts(mock, policy=FAST, **kw) -> RunOptions:
    return RunOptions(mock.base_url, policy, **kw)


def fail(mock, tmp_path, req=T2V, policy=FAST, **kw) -> HostedAPIError:
    with pytest.raises(HostedAPIError) as e:
        generate(req, KEY, opts(mock, policy, **kw), tmp_path)
    assert KEY not in str(e.value)
    return e.value


# ----------------------------------------------------------------------------- success
def test_success_after_n_polls_sends_exact_requests_and_decodes(mock, tmp_path):
    mock.arm("ok", polls=4)
    out = generate(T2V, KEY, opts(mock), tmp_path)
    (create,) = mock.calls("POST", CREATE)
    assert create.headers["authorization"] == f"Bearer {KEY}"
    assert create.headers["content-type"] == "application/json"
    assert create.headers["x-dashscope-async"] == "enable"
    assert "x-dashscope-ossresourceresolve" not in create.headers
    assert json.loads(create.body) == {
        "model": "happyhorse-1.0-t2v", "input": {"prompt": "A horse gallops along a beach at sunset."},
        "parameters": {"resolution": "720P", "ratio": "16:9", "duration": 5, "seed": 42, "watermark": False}}
    polls = mock.calls("GET", f"/api/v1/tasks/{out.task_id}")
    assert len(polls) == 4 and all(p.headers["authorization"] == f"Bearer {KEY}" for p in polls)
    (dl,) = mock.calls("GET", "/files/")
    assert "authorization" not in dl.headers                      # the key never goes to the file host
    for r in mock.requests:                                       # the key only ever in Authorization
        assert KEY not in r.path and KEY.encode() not in r.body
        assert all(KEY not in v for k, v in r.headers.items() if k != "authorization")
    assert out.usage == {"duration": 5, "input_video_duration": 0, "output_video_duration": 5, "video_count": 1,
                         "SR": 720, "ratio": "16:9"}
    clip = out.clip
    assert clip.frames.shape == (24, 48, 64, 3) and clip.frames.dtype == torch.float32
    assert clip.fps == 24
    levels = clip.frames.mean(dim=(1, 2, 3)) * 255                 # fixture frame t is grey 16 + 8 t
    assert torch.allclose(levels, 16 + 8 * torch.arange(24.0), atol=3.0), levels
    wav = clip.waveform
    assert clip.sample_rate == 44100 and wav.shape[0] == 2 and abs(wav.shape[1] / 44100 - 1.0) < 0.05
    spectrum = np.abs(np.fft.rfft(wav[0, 4410:-4410].numpy()))
    peak_hz = np.argmax(spectrum) * 44100 / (wav.shape[1] - 8820)
    assert abs(peak_hz - 440) < 5, peak_hz
    assert "frames 64x48 @ 24 fps" in out.info() and out.task_id in out.info()
    assert out.mp4[4:8] == b"ftyp" and list(tmp_path.iterdir()) == []      # bytes kept, temporary file gone


def test_mp4_without_audio_still_gives_frames(mock, tmp_path):
    mock.arm("ok", polls=1, audio=False)
    clip = generate(T2V, KEY, opts(mock), tmp_path).clip
    assert clip.waveform is None and clip.frames.shape[0] == 24 and clip.fps == 24


def test_first_frame_only_keeps_one_frame_but_counts_all(mock, tmp_path):
    mock.arm("ok", polls=1)
    out = generate(T2V, KEY, opts(mock, first_frame_only=True), tmp_path)
    assert out.clip.frames.shape == (1, 48, 64, 3) and out.clip.frame_count == 24 and out.clip.seconds == 1.0
    assert abs(float(out.clip.frames.mean()) * 255 - 16) < 3 and "24 frames" in out.info()


def test_fetch_polls_an_existing_task_without_creating_one(mock, tmp_path):
    mock.arm("ok", polls=2)
    first = generate(T2V, KEY, opts(mock), tmp_path)
    mock.requests.clear()
    again = fetch(first.task_id, KEY, opts(mock), tmp_path)
    assert again.task_id == first.task_id and mock.calls("POST", CREATE) == []
    with pytest.raises(HostedAPIError, match="not a task id"):
        fetch("../etc", KEY, opts(mock), tmp_path)


def test_local_picture_via_temporary_storage(mock, tmp_path):
    t = Transport(KEY)
    png = b"\x89PNG fake picture bytes"
    url = upload(t, mock.base_url, "happyhorse-1.0-i2v", png, "start frame.png", "image/png")
    assert url.startswith("oss://mock/happyhorse-1.0-i2v/") and url.endswith("start_frame.png")
    (policy,) = mock.calls("GET", "/api/v1/uploads")
    assert "action=getPolicy" in policy.path and "model=happyhorse-1.0-i2v" in policy.path
    (post,) = mock.calls("POST", "/oss-upload")
    assert "authorization" not in post.headers                   # OSS checks the policy, never the key
    assert mock.uploads[url[len("oss://"):]] == png
    req = HostedRequest("i2v", "", "720P", None, 5, 1, False, first_frame=url)
    generate(req, KEY, opts(mock), tmp_path)
    create = mock.calls("POST", CREATE)[0]
    assert create.headers["x-dashscope-ossresourceresolve"] == "enable"
    assert json.loads(create.body)["input"] == {"media": [{"type": "first_frame", "url": url}]}


# ----------------------------------------------------------------------------- failures
def test_failed_task_reports_code_and_is_not_resubmitted(mock, tmp_path):
    mock.arm("task_failed", polls=3, code="DataInspectionFailed")
    err = fail(mock, tmp_path)
    assert err.kind == "task_failed" and err.code == "DataInspectionFailed" and err.task_id in str(err)
    assert "content moderation" in str(err) and "mock algorithm failure" in str(err)
    assert len(mock.calls("POST", CREATE)) == 1


def test_401_is_not_retried_and_names_key_and_region(mock, tmp_path):
    mock.arm("auth_401")
    err = fail(mock, tmp_path)
    assert err.kind == "auth" and err.status == 401 and "InvalidApiKey" in str(err)
    assert "same region" in str(err) and "DASHSCOPE_API_KEY" in str(err)
    assert len(mock.calls("POST", CREATE)) == 1


@pytest.mark.parametrize("code, status, words", [
    ("InvalidParameter", 400, ["rejected", "InvalidParameter"]),
    ("DataInspectionFailed", 400, ["content moderation"]),
    ("Arrearage", 400, ["overdue payment"]),
    ("AllocationQuota.FreeTierOnly", 403, ["free quota"]),
])
def test_400_and_403_carry_the_service_code_and_advice(mock, tmp_path, code, status, words):
    mock.arm("bad_request_400", code=code)
    err = fail(mock, tmp_path)
    assert err.status == status and err.code == code and f"mock {code}" in str(err)
    for w in words:
        assert w in str(err)
    assert len(mock.calls("POST", CREATE)) == 1


@pytest.mark.parametrize("scenario", ["rate_429_then_ok", "server_500_then_ok"])
@pytest.mark.parametrize("phase", ["create", "poll"])
def test_429_and_500_are_retried_with_backoff_then_succeed(mock, tmp_path, scenario, phase):
    mock.arm(scenario, times=2, phase=phase, retry_after="0" if scenario.startswith("rate") else None)
    out = generate(T2V, KEY, opts(mock), tmp_path)
    assert out.clip.frames.shape[0] == 24 and len(out.retries) == 2
    assert len(mock.calls("POST", CREATE)) == (3 if phase == "create" else 1)
    creates = mock.calls("POST", CREATE)
    assert all(c.body == creates[0].body for c in creates)     # the same request, not a new one


def test_retries_are_bounded_and_then_say_so(mock, tmp_path):
    mock.arm("rate_429_then_ok", times=50)
    err = fail(mock, tmp_path)
    assert err.kind == "rate_limit" and "after 3 retries" in str(err) and "Throttling.RateQuota" in str(err)
    assert len(mock.calls("POST", CREATE)) == 4
    mock.armed.clear()
    mock.arm("server_500_then_ok", times=50, phase="poll")
    err = fail(mock, tmp_path)
    assert err.kind == "server" and err.task_id and "after 3 retries" in str(err)


class FakeClock:
    """A clock that only moves when the client sleeps; every sleep is recorded in `waits` (seconds)."""

    def __init__(self) -> None:
        self.now, self.waits = 0.0, []

    def sleep(self, s: float) -> None:
        self.waits.append(s)
        self.now += s

    def clock(self) -> float:
        return self.now


def test_backoff_waits_grow(mock, tmp_path):
    fake = FakeClock()
    waits = fake.waits
    from happyhorse_core.hosted.tasks import TaskClient
    policy = PollPolicy(first_poll_s=1.0, backoff=2.0, max_interval_s=5.0, slice_s=100.0)
    client = TaskClient(Transport(KEY), mock.base_url, policy, sleep=fake.sleep, clock=fake.clock)
    mock.arm("ok", polls=5)
    task = client.create({"model": "happyhorse-1.0-t2v", "input": {"prompt": "x"}, "parameters": {}})
    client.wait(task)
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_retry_waits_double_and_honour_retry_after(mock, tmp_path, monkeypatch):
    from happyhorse_core.hosted import tasks
    monkeypatch.setattr(tasks.random, "random", lambda: 0.0)          # no jitter
    fake = FakeClock()
    waits = fake.waits
    policy = PollPolicy(retries=3, retry_base_s=1.0, retry_max_s=60.0, slice_s=1000.0)
    client = tasks.TaskClient(Transport(KEY), mock.base_url, policy, sleep=fake.sleep, clock=fake.clock)
    body = {"model": "happyhorse-1.0-t2v", "input": {"prompt": "x"}, "parameters": {}}
    mock.arm("server_500_then_ok", times=3)
    client.create(body)
    assert waits == [1.0, 2.0, 4.0]
    waits.clear()
    mock.arm("rate_429_then_ok", times=1, retry_after="7")
    client.create(body)
    assert waits == [7.0]


def test_task_canceled_elsewhere_is_final(mock, tmp_path):
    import urllib.request
    mock.arm("canceled")

    def cancel_from_the_console(task_id, status, seconds):
        if status == "PENDING" and seconds > 0:
            urllib.request.urlopen(urllib.request.Request(f"{mock.base_url}/tasks/{task_id}/cancel", method="POST"))

    with pytest.raises(HostedAPIError) as e:
        generate(T2V, KEY, opts(mock), tmp_path, progress=cancel_from_the_console)
    assert e.value.kind == "canceled" and "CANCELED on the server" in str(e.value)
    assert len(mock.calls("POST", CREATE)) == 1


def test_a_result_that_is_not_an_mp4_is_refused_before_decoding(mock, tmp_path):
    mock.arm("ok", polls=1, variant="not_mp4")
    err = fail(mock, tmp_path)
    assert err.kind == "malformed" and "is not an MP4" in str(err) and "<html>" in str(err)
    assert list(tmp_path.glob("*.mp4")) == []


def test_slow_poll_cancelled_stops_at_once_and_names_the_task(mock, tmp_path):
    mock.arm("never_finishes")
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(HostedAPIError) as e:
        generate(T2V, KEY, opts(mock, PollPolicy(first_poll_s=0.02, max_interval_s=0.05, slice_s=0.005)), tmp_path,
                 cancelled=stop.is_set)
    latency = time.monotonic() - 0.3 - t0
    err = e.value
    task_id = err.task_id
    assert err.kind == "cancelled_by_user" and task_id and f"stopped polling task {task_id}" in str(err)
    assert "RUNNING cannot be cancelled" in str(err) and "Fetch Task" in str(err)
    assert len(mock.calls("POST", f"/api/v1/tasks/{task_id}/cancel")) == 1
    assert latency < 1.0, latency                                 # one sleep slice + one cancel call
    n = len(mock.calls("GET", f"/api/v1/tasks/{task_id}"))
    time.sleep(0.2)
    assert len(mock.calls("GET", f"/api/v1/tasks/{task_id}")) == n   # polling really stopped


def test_cancel_of_a_queued_task_is_accepted(mock, tmp_path):
    mock.arm("canceled")
    polls = []
    with pytest.raises(HostedAPIError) as e:
        generate(T2V, KEY, opts(mock), tmp_path, cancelled=lambda: len(polls) >= 2,
                 progress=lambda tid, status, s: polls.append(status))
    assert "accepted the cancel" in str(e.value) and "not billed" in str(e.value)
    assert mock.tasks[e.value.task_id].state == "CANCELED"


def test_canceled_and_unknown_states_are_final(mock, tmp_path):
    mock.arm("expired_url", variant="unknown")
    err = fail(mock, tmp_path)
    assert err.kind == "unknown_task" and "24 h" in str(err)


@pytest.mark.parametrize("phase, variant, words", [
    ("create", "", ["create answer is not JSON"]),
    ("poll", "text", ["is not JSON", "<html>"]),
    ("poll", "no_output", ["no 'output' object"]),
    ("poll", "bad_status", ["'DONE'"]),
])
def test_malformed_answers_are_reported(mock, tmp_path, phase, variant, words):
    mock.arm("malformed_json", phase=phase, variant=variant)
    err = fail(mock, tmp_path)
    assert err.kind == "malformed"
    for w in words:
        assert w in str(err)


@pytest.mark.parametrize("variant", ["length", "unbounded"])
def test_oversized_download_is_cut_off(mock, tmp_path, variant):
    mock.arm("oversized_download", variant=variant, size=3 * 2**20)
    err = fail(mock, tmp_path, max_download_mb=1)
    assert err.kind == "too_large" and "1 MiB limit" in str(err) and err.task_id in str(err)
    assert ("3145728 bytes" in str(err)) == (variant == "length")
    assert list(tmp_path.glob("*.mp4")) == []


def test_expired_result_url(mock, tmp_path):
    mock.arm("expired_url")
    err = fail(mock, tmp_path)
    assert err.kind == "expired_url" and "AccessDenied" in str(err) and "24 h" in str(err)
    assert "Signature" not in str(err)                             # the signed query is not echoed


def test_create_timeout_after_sending_is_not_resubmitted(mock, tmp_path):
    mock.arm("slow_network", delay_s=1.0)
    err = fail(mock, tmp_path, request_timeout_s=0.3)
    assert err.kind == "timeout" and "may have been created" in str(err)
    time.sleep(0.8)                                               # let the mock finish the slow answer
    assert len(mock.calls("POST", CREATE)) == 1


def test_poll_timeouts_are_retried(mock, tmp_path):
    mock.arm("slow_network", phase="poll", times=1, delay_s=0.8)
    out = generate(T2V, KEY, opts(mock, request_timeout_s=0.3), tmp_path)
    assert len(out.retries) == 1 and "no answer from" in out.retries[0] and "within 0 s" not in out.retries[0]
    assert len(mock.calls("POST", CREATE)) == 1


def test_service_message_echoing_the_key_is_redacted(mock, tmp_path, monkeypatch):
    from happyhorse_core.testing import dashscope_routes
    orig = dashscope_routes._create

    def echo(h, body):
        return h._err(401, "InvalidApiKey", f"Invalid API-key provided: {h.headers['Authorization'][7:]}")

    monkeypatch.setattr(dashscope_routes, "_create", echo)
    err = fail(mock, tmp_path)
    assert "Invalid API-key provided: sk-***" in str(err)
    monkeypatch.setattr(dashscope_routes, "_create", orig)
