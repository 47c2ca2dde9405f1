"""The HTTP side of the local DashScope mock: routes, status codes and bodies, per scenario.

dashscope_mock.DashScopeMock owns the state (armed scenarios, tasks, uploads, recorded requests,
fixture files) and the server thread; this module answers each request from that state, in the
documented request/response shapes (shared/design/HOSTED_API.md §7):
  POST CREATE                        create a task (auth, async header, body validation, scripted errors)
  GET  /api/v1/tasks/<id>            poll: the task's scripted state machine
  POST /api/v1/tasks/<id>/cancel     cancel a PENDING task
  GET  /api/v1/uploads               temporary-storage upload policy;  POST /oss-upload  the upload
  GET  /files/<id>.mp4?Expires=...   the pre-signed result file (expired, oversized, not-an-mp4 variants)
  POST /__mock__/arm                 arm a scenario from outside the process (manual runs)
"""
from __future__ import annotations

import json
import re
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Optional
from urllib.parse import parse_qs, urlparse

if TYPE_CHECKING:
    from .dashscope_mock import DashScopeMock

CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"


class Server(ThreadingHTTPServer):
    """One thread per request; `server.mock` is the DashScopeMock whose state the routes answer from."""

    def handle_error(self, request, client_address):
        """A client that timed out and hung up is part of the scripts (slow_network), not an error."""
        import sys
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def make_handler(mock: DashScopeMock):
    """The request handler class bound to `mock` (its state, its recorded requests)."""
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
            mock.record(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)

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
    task = mock_of(h).add_task(arm, data, errors_left=arm.times if arm.phase == "poll" else 0)
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
