"""A local stand-in for the Model Studio (DashScope) video-synthesis API, on 127.0.0.1 only.

It implements the documented request/response shapes (shared/design/HOSTED_API.md §7) so the hosted
client and nodes can be tested with no network and no key: create (header + body validation, strict or
lenient), poll with a scripted state machine per task, cancel, temporary-storage policy + upload, and
pre-signed result files. Every request is recorded (method, path, headers, body) for the tests.

    with DashScopeMock() as mock:                 # random port
        mock.arm("rate_429_then_ok", times=2)     # the next create: 429 twice, then a normal task
        base = mock.base_url                      # http://127.0.0.1:<port>/api/v1

Manual use in ComfyUI: ``python -m happyhorse_core.testing.dashscope_mock --port 8765``, set the node's
region to 'custom base URL' = http://127.0.0.1:8765/api/v1 and DASHSCOPE_API_KEY=sk-mock-<scenario>.
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlparse

import numpy as np

from ..hosted.spec import (AUDIO_SETTINGS, DURATION_RANGE, MODELS, RATIOS, RATIOS_UNCONFIRMED, RESOLUTIONS,
                           SEED_MAX)

CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"
SCENARIOS = ("ok", "task_failed", "auth_401", "rate_429_then_ok", "server_500_then_ok", "bad_request_400",
             "malformed_json", "oversized_download", "expired_url", "canceled", "never_finishes", "slow_network")


@dataclass
class Arm:
    """One scripted behaviour, consumed by the next create call."""

    scenario: str = "ok"
    polls: int = 2                 # polls until SUCCEEDED / FAILED (the first answers PENDING)
    times: int = 1                 # 429 / 500 answers before things work
    phase: str = "create"          # where 429 / 500 / malformed happen: create or poll
    code: str = ""                 # FAILED / 400 code variant
    variant: str = ""              # malformed: text / no_output / bad_status; oversized: length / unbounded;
                                   # expired: forbidden / unknown; ok: not_mp4 (the file route serves HTML)
    retry_after: Optional[str] = None
    audio: bool = True             # which fixture the result URL serves
    delay_s: float = 0.0           # slow_network: delay of the create answer, or of the first `times` polls
    size: int = 0                  # oversized_download: bytes served


@dataclass
class Task:
    id: str
    arm: Arm
    body: dict
    polls: int = 0
    state: str = "PENDING"
    errors_left: int = 0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict      # lower-case names (HTTP header names are case-insensitive)
    body: bytes
    time: float = field(default_factory=time.monotonic)


def make_fixture(path: Path, audio: bool, seconds: float = 1.0, fps: int = 24, size=(64, 48)) -> Path:
    """A tiny H.264 MP4 (frame t is a flat grey of level 16 + 8 t, so frames are checkable) with a
    440 Hz AAC tone (44.1 kHz stereo) or no audio stream."""
    from ..media.mux import write_mp4
    n = int(round(seconds * fps))
    w, h = size
    frames = np.zeros((n, h, w, 3), np.uint8)
    for t in range(n):
        frames[t] = 16 + 8 * t % 224
    wave = None
    if audio:
        k = np.arange(int(seconds * 44100)) / 44100.0
        tone = (0.3 * np.sin(2 * np.pi * 440.0 * k)).astype(np.float32)
        wave = np.stack([tone, tone])
    return write_mp4(path, frames, wave, 44100, fps=fps)


class DashScopeMock:
    def __init__(self, strict: bool = True, expires_s: float = 60.0):
        self.strict, self.expires_s = strict, expires_s
        self.requests: list[Recorded] = []
        self.tasks: dict[str, Task] = {}
        self.uploads: dict[str, bytes] = {}
        self.armed: list[Arm] = []
        self.lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="dashscope_mock_")
        self.fixtures = {a: make_fixture(Path(self._dir.name) / f"clip_{a}.mp4", a) for a in (True, False)}
        self.server = _Server(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.server.mock = self
        self.thread = threading.Thread(target=self.server.serve_forever, name="dashscope-mock", daemon=True)

    # ------------------------------------------------------------------ control
    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.root + "/api/v1"

    def arm(self, scenario: str = "ok", **kw) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; known: {SCENARIOS}")
        with self.lock:
            self.armed.append(Arm(scenario, **kw))

    def start(self) -> "DashScopeMock":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        self._dir.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def calls(self, method: str, prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    # ------------------------------------------------------------------ behaviour
    def next_arm(self, key: str) -> Arm:
        with self.lock:
            if self.armed:
                return self.armed.pop(0)
        m = re.fullmatch(r"sk-mock-([a-z0-9_]+)", key)
        return Arm(m.group(1)) if m and m.group(1) in SCENARIOS else Arm()

    def validate(self, body: dict, oss_header: bool) -> Optional[tuple[int, str, str]]:
        """(status, code, message) for an invalid create body, else None (HOSTED_API.md §7)."""
        bad = lambda msg: (400, "InvalidParameter", msg)   # noqa: E731
        mode = {v: k for k, v in MODELS.items()}.get(body.get("model"))
        if mode is None:
            return bad(f"Model not exist: {body.get('model')!r}")
        inp, par = body.get("input"), body.get("parameters", {})
        if not isinstance(inp, dict) or not isinstance(par, dict):
            return bad("input and parameters must be objects")
        if mode != "i2v" and not str(inp.get("prompt", "")).strip():
            return (400, "BadRequest.EmptyInput", "Required parameter prompt missing")
        media = inp.get("media", [])
        want = {"t2v": {}, "i2v": {"first_frame": (1, 1)}, "r2v": {"reference_image": (1, 9)},
                "edit": {"video": (1, 1), "reference_image": (0, 5)}}[mode]
        kinds = [m.get("type") for m in media]
        if set(kinds) - set(want):
            return bad(f"media types {kinds} not allowed for {body['model']}")
        for kind, (lo, hi) in want.items():
            if not lo <= kinds.count(kind) <= hi:
                return bad(f"{kind}: {kinds.count(kind)} given, {lo}..{hi} allowed")
        for m in media:
            url = str(m.get("url", ""))
            if url.startswith("oss://") and not oss_header:
                return (400, "InvalidURL", "oss:// URL without X-DashScope-OssResourceResolve")
            if not (url.startswith(("http://", "https://", "oss://")) or re.match(r"data:image/\w+;base64,", url)):
                return (400, "InvalidURL", f"unsupported url {url[:30]!r}")
        if par.get("resolution", "1080P") not in RESOLUTIONS:
            return bad("resolution")
        if "ratio" in par and (mode not in ("t2v", "r2v") or par["ratio"] not in
                               RATIOS + (() if self.strict else RATIOS_UNCONFIRMED)):
            return bad("ratio")
        if "duration" in par:
            d = par["duration"]
            if mode == "edit" or not isinstance(d, int) or isinstance(d, bool) or not \
                    DURATION_RANGE[0] <= d <= DURATION_RANGE[1]:
                return bad("duration")
        if "seed" in par and not (isinstance(par["seed"], int) and 0 <= par["seed"] <= SEED_MAX):
            return bad("seed")
        if "watermark" in par and not isinstance(par["watermark"], bool):
            return bad("watermark")
        if "audio_setting" in par and (mode != "edit" or par["audio_setting"] not in AUDIO_SETTINGS):
            return bad("audio_setting")
        return None

    def usage(self, task: Task) -> dict:
        par, mode = task.body.get("parameters", {}), {v: k for k, v in MODELS.items()}[task.body["model"]]
        seconds = 1 if mode == "edit" else par.get("duration", 5)
        out = {"duration": 2 * seconds if mode == "edit" else seconds,
               "input_video_duration": seconds if mode == "edit" else 0, "output_video_duration": seconds,
               "video_count": 1, "SR": 1080 if par.get("resolution", "1080P") == "1080P" else 720}
        if mode in ("t2v", "r2v"):
            out["ratio"] = par.get("ratio", "16:9")
        return out

    def file_url(self, task: Task) -> str:
        expires = int(time.time() + self.expires_s)
        return f"{self.root}/files/{task.id}.mp4?Expires={expires}&OSSAccessKeyId=mock&Signature=sig-{task.id}"


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that timed out and hung up is part of the scripts (slow_network), not an error."""
        import sys
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def _handler(mock: DashScopeMock):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):      # keep the test output clean
            pass

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _send(self, status: int, payload, ctype="application/json", headers: Optional[dict] = None):
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _err(self, status: int, code: str, message: str, headers=None):
            self._send(status, {"request_id": uuid.uuid4().hex, "code": code, "message": message}, headers=headers)

        def _record(self, body: bytes) -> None:
            with mock.lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                mock.requests.append(Recorded(self.command, self.path, headers, body))

        def do_POST(self):
            body = self._body()
            self._record(body)
            path = urlparse(self.path).path
            if path == CREATE:
                return _create(self, body)
            if m := re.fullmatch(r"/api/v1/tasks/([\w-]+)/cancel", path):
                task = mock.tasks.get(m.group(1))
                if task is not None and task.state == "PENDING":
                    task.state = "CANCELED"
                    return self._send(200, {"request_id": uuid.uuid4().hex})
                return self._err(400, "UnsupportedOperation", "only PENDING tasks can be canceled")
            if path == "/oss-upload":
                return _oss_upload(self, body)
            if path == "/__mock__/arm":
                mock.arm(**json.loads(body or b"{}"))
                return self._send(200, {})
            self._err(404, "NotFound", path)

        def do_GET(self):
            self._record(b"")
            url = urlparse(self.path)
            if m := re.fullmatch(r"/api/v1/tasks/([\w-]+)", url.path):
                return _poll(self, m.group(1))
            if url.path == "/api/v1/uploads":
                q = parse_qs(url.query)
                if not self.headers.get("Authorization", "").startswith("Bearer "):
                    return self._err(401, "InvalidApiKey", "No API-key provided.")
                return self._send(200, {"request_id": "r", "data": {
                    "policy": "cG9saWN5", "signature": "c2ln", "upload_dir": f"mock/{q.get('model', ['?'])[0]}",
                    "upload_host": mock.root + "/oss-upload", "oss_access_key_id": "mock-ak", "expire_in_seconds": 300,
                    "max_file_size_mb": 100, "x_oss_object_acl": "private", "x_oss_forbid_overwrite": "true"}})
            if m := re.fullmatch(r"/files/([\w-]+)\.mp4", url.path):
                return _file(self, m.group(1), parse_qs(url.query))
            self._err(404, "NotFound", url.path)

    return Handler


def _create(h, body: bytes):
    auth = h.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or len(auth) <= 7:
        return h._err(401, "InvalidApiKey", "No API-key provided.")
    arm = mock_of(h).next_arm(auth[7:])
    if arm.phase == "create":
        time.sleep(arm.delay_s)
    if arm.scenario == "auth_401":
        return h._err(401, "InvalidApiKey", "Invalid API-key provided.")
    if arm.scenario == "bad_request_400":
        code = arm.code or "InvalidParameter"
        return h._err(403 if code.startswith("AllocationQuota") else 400, code, f"mock {code}")
    if h.headers.get("X-DashScope-Async") != "enable":
        return h._err(403, "AccessDenied", "current user api does not support synchronous calls")
    try:
        data = json.loads(body)
    except ValueError:
        return h._err(400, "InvalidParameter", "body is not JSON")
    problem = mock_of(h).validate(data, h.headers.get("X-DashScope-OssResourceResolve") == "enable")
    if problem:
        return h._err(*problem)
    if arm.phase == "create" and arm.scenario in ("rate_429_then_ok", "server_500_then_ok") and arm.times > 0:
        arm.times -= 1
        mock_of(h).armed.insert(0, arm)   # the retry gets the same script
        if arm.scenario == "rate_429_then_ok":
            extra = {"Retry-After": arm.retry_after} if arm.retry_after else None
            return h._err(429, "Throttling.RateQuota", "Requests rate limit exceeded", extra)
        return h._err(500, "InternalError", "mock internal error")
    if arm.scenario == "malformed_json" and arm.phase == "create":
        return h._send(200, b'{"request_id": "x", "output": {"task_id": ', "application/json")
    task = Task(uuid.uuid4().hex, arm, data, errors_left=arm.times if arm.phase == "poll" else 0)
    mock_of(h).tasks[task.id] = task
    h._send(200, {"request_id": uuid.uuid4().hex, "output": {"task_id": task.id, "task_status": "PENDING"}})


def mock_of(h) -> DashScopeMock:
    return h.server.mock


def _poll(h, task_id: str):
    mock = mock_of(h)
    task = mock.tasks.get(task_id)
    base = {"request_id": uuid.uuid4().hex}
    if task is None:
        return h._send(200, {**base, "output": {"task_id": task_id, "task_status": "UNKNOWN"}})
    arm = task.arm
    if arm.scenario == "slow_network" and arm.phase == "poll" and task.errors_left > 0:
        task.errors_left -= 1            # only the first `times` polls are slow
        time.sleep(arm.delay_s)
    if arm.phase == "poll" and task.errors_left > 0 and arm.scenario in ("rate_429_then_ok", "server_500_then_ok"):
        task.errors_left -= 1
        if arm.scenario == "rate_429_then_ok":
            return h._err(429, "Throttling", "Requests throttling triggered")
        return h._err(500, "InternalError", "mock internal error")
    if arm.scenario == "malformed_json" and arm.phase == "poll":
        if arm.variant == "no_output":
            return h._send(200, base)
        if arm.variant == "bad_status":
            return h._send(200, {**base, "output": {"task_id": task_id, "task_status": "DONE"}})
        return h._send(200, b"<html>gateway error</html>", "text/html")
    task.polls += 1
    if task.state == "CANCELED":
        pass
    elif arm.scenario == "canceled":          # stays queued until someone cancels it
        task.state = "PENDING"
    elif arm.scenario == "never_finishes":
        task.state = "PENDING" if task.polls == 1 else "RUNNING"
    elif task.polls >= arm.polls:
        task.state = "FAILED" if arm.scenario == "task_failed" else "SUCCEEDED"
    else:
        task.state = "PENDING" if task.polls == 1 else "RUNNING"
    if arm.scenario == "expired_url" and arm.variant == "unknown" and task.state == "SUCCEEDED":
        return h._send(200, {**base, "output": {"task_id": task_id, "task_status": "UNKNOWN"}})
    out = {"task_id": task_id, "task_status": task.state, "submit_time": "2026-04-25 15:03:25.848"}
    payload = {**base, "output": out}
    if task.state == "FAILED":
        out.update(code=arm.code or "InternalError.Algo", message="mock algorithm failure")
    elif task.state == "SUCCEEDED":
        out.update(scheduled_time="2026-04-25 15:03:26.000", end_time="2026-04-25 15:04:40.000",
                   orig_prompt=task.body["input"].get("prompt", ""), video_url=mock.file_url(task))
        payload["usage"] = mock.usage(task)
    h._send(200, payload)


def _file(h, task_id: str, query: dict):
    mock = mock_of(h)
    task = mock.tasks.get(task_id)
    expires = int((query.get("Expires") or ["0"])[0])
    denied = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
              b"<Message>Request has expired.</Message></Error>")
    if task is None or query.get("Signature") != [f"sig-{task_id}"] or expires < time.time() or \
            task.arm.scenario == "expired_url":
        return h._send(403, denied, "application/xml")
    if task.arm.scenario == "oversized_download":
        size = task.arm.size or 3 * 2**20
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        if task.arm.variant != "unbounded":
            h.send_header("Content-Length", str(size))
        h.end_headers()
        chunk = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * (2**16 - 12)
        try:
            for _ in range(size // len(chunk) + 1):
                h.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        h.close_connection = True
        return None
    if task.arm.variant == "not_mp4":     # e.g. a captive portal or an error page with status 200
        return h._send(200, b"<html><body>Sign in to continue</body></html>", "text/html")
    h._send(200, mock.fixtures[task.arm.audio].read_bytes(), "video/mp4")


def _oss_upload(h, body: bytes):
    ctype = h.headers.get("Content-Type", "")
    m = re.search(r"boundary=(\S+)", ctype)
    if not m or h.headers.get("Authorization"):
        return h._send(400, b"<Error><Code>InvalidArgument</Code></Error>", "application/xml")
    parts = [p for p in body.split(b"--" + m.group(1).encode()) if p.strip(b"-\r\n")]
    names = [re.search(rb'name="([^"]+)"', p).group(1).decode() for p in parts]
    if not names or names[-1] != "file":
        return h._send(400, b"<Error><Code>InvalidArgument</Code><Message>file must be last</Message></Error>",
                       "application/xml")
    fields = {n: p.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n") for n, p in zip(names, parts)}
    mock_of(h).uploads[fields["key"].decode()] = fields["file"]
    h._send(200, b"", "text/plain")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="local DashScope mock for manual tests of the hosted nodes")
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args(argv)
    mock = DashScopeMock()
    mock.server.server_close()
    mock.server = _Server(("127.0.0.1", args.port), _handler(mock))
    mock.server.mock = mock
    print(f"DashScope mock on {mock.base_url} (scenario from the key: sk-mock-<scenario>)")
    try:
        mock.server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
