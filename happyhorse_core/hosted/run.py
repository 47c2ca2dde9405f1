"""One hosted generation end to end: check -> create -> poll -> download (capped) -> decode.

Hosts (the ComfyUI nodes, tests) call ``generate`` or ``fetch`` with plain callables for Cancel and
progress; nothing here knows ComfyUI. The key is used only by the Transport's Authorization header;
every error leaving this module is passed through ``redact`` and a RedactingFilter guards the module
loggers while a run is in progress.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .errors import HostedAPIError
from .keys import RedactingFilter, redact
from .result import HostedClip, decode_mp4
from .spec import HostedRequest, build_body, check, uses_oss
from .tasks import PollPolicy, Progress, TaskClient, TaskResult
from .transport import Transport

DEFAULT_MAX_DOWNLOAD_MB = 512
log = logging.getLogger("HappyHorse.hosted")


@dataclass
class RunOptions:
    base_url: str
    policy: PollPolicy = field(default_factory=PollPolicy)
    max_download_mb: float = DEFAULT_MAX_DOWNLOAD_MB
    request_timeout_s: float = 60.0
    download_timeout_s: float = 120.0      # socket timeout (per read) for the result download
    region_hint: str = ""
    first_frame_only: bool = False         # IMAGE output: only the first frame (saves RAM when only saving)


@dataclass
class Outcome:
    task_id: str
    clip: HostedClip
    mp4: bytes                     # the downloaded file as the service made it (for a native VIDEO)
    usage: dict
    warnings: list[str]
    retries: list[str]

    def info(self) -> str:
        """A short human summary for the node's text output (no key, no signed URL)."""
        c = self.clip
        audio = (f"audio {c.waveform.shape[0]} ch @ {c.sample_rate} Hz" if c.waveform is not None
                 else "no audio track (silence returned)")
        lines = [f"task {self.task_id}: {c.frame_count} frames {c.frames.shape[2]}x{c.frames.shape[1]} @ "
                 f"{float(c.fps):g} fps ({c.seconds:.2f} s), {audio}"]
        if self.usage:
            lines.append("usage: " + ", ".join(f"{k}={v}" for k, v in self.usage.items()))
        lines += [f"warning: {w}" for w in self.warnings] + self.retries
        return "\n".join(lines)


@contextmanager
def _guarded(api_key: str):
    """Mask the key in this module tree's log records and in any error raised inside the block."""
    flt = RedactingFilter(api_key)
    loggers = [logging.getLogger("HappyHorse.hosted"), logging.getLogger("HappyHorse")]
    for lg in loggers:
        lg.addFilter(flt)
    try:
        yield
    except HostedAPIError as e:
        clean = redact(e, api_key)
        if clean != str(e):
            e.args = (clean,)
        raise
    finally:
        for lg in loggers:
            lg.removeFilter(flt)


def generate(req: HostedRequest, api_key: str, opts: RunOptions, workdir: Path,
             cancelled: Callable[[], bool] = lambda: False, progress: Optional[Progress] = None,
             on_task: Callable[[str], None] = lambda task_id: None) -> Outcome:
    """Create a task for `req` (checked first: a bad value costs no request) and return its clip.
    on_task(task_id) runs as soon as the id is known, so a host can show it before polling starts."""
    warnings = check(req)
    for w in warnings:
        log.warning("HappyHorse API: %s", w)
    with _guarded(api_key):
        t = Transport(api_key, opts.request_timeout_s)
        client = TaskClient(t, opts.base_url, opts.policy, cancelled, progress, region_hint=opts.region_hint)
        task_id = client.create(build_body(req), oss=uses_oss(req))
        on_task(task_id)
        result = client.wait(task_id)
        return _finish(t, client, result, opts, workdir, cancelled, warnings)


def fetch(task_id: str, api_key: str, opts: RunOptions, workdir: Path,
          cancelled: Callable[[], bool] = lambda: False, progress: Optional[Progress] = None) -> Outcome:
    """Poll an existing task (e.g. one whose polling was cancelled) and return its clip; creates nothing."""
    task_id = task_id.strip()
    if not task_id or any(c in task_id for c in "/?#% ") or len(task_id) > 128:
        raise HostedAPIError("bad_request", f"{task_id!r} is not a task id: paste the id from the error or the "
                             "info text of the node that created it")
    with _guarded(api_key):
        t = Transport(api_key, opts.request_timeout_s)
        policy = PollPolicy(**{**opts.policy.__dict__, "first_poll_s": 0.0})
        client = TaskClient(t, opts.base_url, policy, cancelled, progress, region_hint=opts.region_hint)
        return _finish(t, client, client.wait(task_id), opts, workdir, cancelled, [])


def _finish(t: Transport, client: TaskClient, result: TaskResult, opts: RunOptions, workdir: Path,
            cancelled: Callable[[], bool], warnings: list[str]) -> Outcome:
    workdir.mkdir(parents=True, exist_ok=True)
    mp4 = workdir / f"happyhorse_{result.task_id[:40]}.mp4"
    cap = int(opts.max_download_mb * 2**20)
    try:
        t.download(result.video_url, mp4, cap, opts.download_timeout_s, cancelled)
    except HostedAPIError as e:
        mp4.unlink(missing_ok=True)
        if e.kind == "cancelled_by_user":
            e = HostedAPIError(e.kind, f"cancelled while downloading task {result.task_id}'s video (the task "
                               "SUCCEEDED and is billed): fetch it within 24 h with HappyHorse 1.0 API Fetch Task")
        raise HostedAPIError(e.kind, str(e), status=e.status, code=e.code, task_id=result.task_id) from None
    try:
        clip = decode_mp4(mp4, first_only=opts.first_frame_only)
        data = mp4.read_bytes()
    finally:
        mp4.unlink(missing_ok=True)
    return Outcome(result.task_id, clip, data, result.usage, warnings, list(client.retry_log))
