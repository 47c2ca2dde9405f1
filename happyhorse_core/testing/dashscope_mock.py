"""A local stand-in for the Model Studio (DashScope) video-synthesis API, on 127.0.0.1 only.

It implements the documented request/response shapes (shared/design/HOSTED_API.md §7) so the hosted
client and nodes can be tested with no network and no key: create (header + body validation, strict or
lenient), poll with a scripted state machine per task, cancel, temporary-storage policy + upload, and
pre-signed result files. Every request is recorded (method, path, headers, body) for the tests.
This module holds the state (scenarios, tasks, uploads, records), body validation and the server's
life cycle; the HTTP routes that answer from that state are in dashscope_routes.py.

    with DashScopeMock() as mock:                 # random port
        mock.arm("rate_429_then_ok", times=2)     # the next create: 429 twice, then a normal task
        base = mock.base_url                      # http://127.0.0.1:<port>/api/v1

Manual use in ComfyUI: ``python -m happyhorse_core.testing.dashscope_mock --port 8765``, set the node's
region to 'custom base URL' = http://127.0.0.1:8765/api/v1 and DASHSCOPE_API_KEY=sk-mock-<scenario>.
"""
from __future__ import annotations

import argparse
import re
import secrets
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..hosted.spec import (AUDIO_SETTINGS, DURATION_RANGE, MODELS, RATIOS, RATIOS_UNCONFIRMED, RESOLUTIONS,
                           SEED_MAX)
from .dashscope_routes import Server, make_handler

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
        self.server = Server(("127.0.0.1", 0), make_handler(self))
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

    # ------------------------------------------------------------------ state (written by dashscope_routes)
    def record(self, method: str, path: str, headers: dict, body: bytes) -> None:
        """Keep one request for the tests (header names lower-case)."""
        with self.lock:
            self.requests.append(Recorded(method, path, headers, body))

    def add_task(self, arm: Arm, body: dict, errors_left: int = 0) -> Task:
        """A new PENDING task created from a valid create body, scripted by `arm`."""
        task = Task(uuid.uuid4().hex, arm, body, errors_left=errors_left)
        self.tasks[task.id] = task
        return task

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


def fake_api_key(label: str = "test") -> str:
    """A fresh key-shaped string for tests, `sk-<label>-<16 random hex>`: made at run time, so no key-like
    literal sits in the repository. Not an `sk-mock-<scenario>` selector unless label is "mock"."""
    return f"sk-{label}-{secrets.token_hex(8)}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="local DashScope mock for manual tests of the hosted nodes")
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args(argv)
    mock = DashScopeMock()
    mock.server.server_close()
    mock.server = Server(("127.0.0.1", args.port), make_handler(mock))
    mock.server.mock = mock
    print(f"DashScope mock on {mock.base_url} (scenario from the key: sk-mock-<scenario>)")
    try:
        mock.server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
