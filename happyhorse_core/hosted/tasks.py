"""The asynchronous task protocol: create (X-DashScope-Async: enable) -> poll GET /tasks/{id} -> result URL.

Rules that cost money if broken (HOSTED_API.md §4-5):
  * create is not idempotent: it is retried only after a clear 429 / 5xx answer, never after a timeout
    of a request that was already sent (the task may exist; the error says so);
  * polls are safe to retry (429 / 5xx / timeouts, a bounded number of times in a row);
  * FAILED, CANCELED and UNKNOWN are final; nothing is resubmitted on its own;
  * Cancel (the host's interrupt) stops polling within one sleep slice; a queued task is cancelled on the
    server (POST /tasks/{id}/cancel, path unconfirmed), a running one still finishes and is billed, so the
    error names the task id for the Fetch Task node.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .errors import HostedAPIError, from_http, task_failed
from .spec import CREATE_PATH
from .transport import Response, Transport

log = logging.getLogger("HappyHorse.hosted")

STATES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")


@dataclass
class PollPolicy:
    """Timing of polls and retries (seconds). The docs suggest polling every 15 s; jobs take 1-5 min."""

    first_poll_s: float = 2.0        # wait before the first poll
    backoff: float = 1.5             # each wait is this much longer ...
    max_interval_s: float = 15.0     # ... up to this
    max_wait_s: float = 1800.0       # give up polling (the task id stays valid for 24 h)
    retries: int = 4                 # 429 / 5xx / timeouts in a row before giving up
    retry_base_s: float = 2.0        # first retry wait; doubles, plus up to 25 % jitter
    retry_max_s: float = 60.0
    slice_s: float = 0.1             # how often a wait checks for Cancel


@dataclass
class TaskResult:
    task_id: str
    status: str
    video_url: str
    usage: dict = field(default_factory=dict)
    output: dict = field(default_factory=dict)
    polls: int = 0


Progress = Callable[[str, str, float], None]     # (task_id, status, seconds since create)


class TaskClient:
    def __init__(self, transport: Transport, base_url: str, policy: Optional[PollPolicy] = None,
                 cancelled: Callable[[], bool] = lambda: False, progress: Optional[Progress] = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 region_hint: str = ""):
        self.t, self.base = transport, base_url.rstrip("/")
        self.policy = policy or PollPolicy()
        self.cancelled, self.progress = cancelled, progress or (lambda *a: None)
        self._sleep, self._clock, self.region_hint = sleep, clock, region_hint
        self.retry_log: list[str] = []   # one line per retry, for the node's info text

    # ------------------------------------------------------------------ create
    def create(self, body: dict, oss: bool = False) -> str:
        """POST the task; returns its task_id. Retries only clear 429 / 5xx answers."""
        headers = {"X-DashScope-Async": "enable"}
        if oss:
            headers["X-DashScope-OssResourceResolve"] = "enable"
        url = self.base + CREATE_PATH
        for attempt in range(self.policy.retries + 1):
            self._check_cancel(None)
            try:
                resp = self.t.api("POST", url, body, headers)
            except HostedAPIError as e:
                if e.kind == "timeout":
                    raise HostedAPIError("timeout", f"{e} after the create request was sent: a task may have been "
                                         "created and billed; look in the Model Studio console (task list) before "
                                         "queueing again, or use its task id in HappyHorse 1.0 API Fetch Task"
                                         ) from None
                raise
            if resp.status == 200:
                return self._task_id(resp)
            err = from_http(resp.status, resp.body, "creating the task", self.region_hint, resp.retry_after())
            self._retry_or_raise(err, attempt)
        raise AssertionError("unreachable")

    def _task_id(self, resp: Response) -> str:
        out = _output(resp, "the create answer")
        task_id = out.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise HostedAPIError("malformed", "the create answer has no output.task_id: the endpoint does not speak "
                                 "the DashScope task protocol (check 'base_url')")
        log.info("HappyHorse API: task %s created (%s)", task_id, out.get("task_status", "?"))
        return task_id

    # ------------------------------------------------------------------ poll
    def wait(self, task_id: str, started: Optional[float] = None) -> TaskResult:
        """Poll until SUCCEEDED (returned) or a final state / timeout / Cancel (raised)."""
        p = self.policy
        t0 = self._clock() if started is None else started
        delay, polls, status = p.first_poll_s, 0, "PENDING"
        self.progress(task_id, status, 0.0)
        while True:
            self._wait(delay, task_id)
            if self._clock() - t0 > p.max_wait_s:
                raise HostedAPIError("timeout", f"task {task_id} is still {status} after {p.max_wait_s:.0f} s; it "
                                     "keeps running on the server: fetch it later (within 24 h) with HappyHorse API "
                                     "Fetch Task", task_id=task_id)
            out, usage = self._poll_once(task_id)
            polls += 1
            status = out["task_status"]
            self.progress(task_id, status, self._clock() - t0)
            if status == "SUCCEEDED":
                url = out.get("video_url")
                if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                    raise HostedAPIError("malformed", "the task SUCCEEDED but output.video_url is missing or not a "
                                         "URL", task_id=task_id)
                return TaskResult(task_id, status, url, usage if isinstance(usage, dict) else {}, out, polls)
            if status == "FAILED":
                raise task_failed(task_id, str(out.get("code") or ""), str(out.get("message") or ""))
            if status == "CANCELED":
                raise HostedAPIError("canceled", f"task {task_id} was CANCELED on the server (while queued); nothing "
                                     "was generated: queue again", task_id=task_id)
            if status == "UNKNOWN":
                raise HostedAPIError("unknown_task", f"task {task_id} is UNKNOWN to the service: the id is wrong, "
                                     "from another region, or older than 24 h (results are deleted then)",
                                     task_id=task_id)
            delay = min(p.max_interval_s, max(delay, 0.001) * p.backoff)

    def _poll_once(self, task_id: str) -> tuple[dict, object]:
        url = f"{self.base}/tasks/{task_id}"
        for attempt in range(self.policy.retries + 1):
            try:
                resp = self.t.api("GET", url)
            except HostedAPIError as e:
                if e.kind not in ("timeout", "network"):
                    raise
                err = HostedAPIError("server", f"polling: {e}", task_id=task_id)
            else:
                if resp.status == 200:
                    out = _output(resp, f"the answer for task {task_id}")
                    if out.get("task_status") not in STATES:
                        raise HostedAPIError("malformed", f"the answer for task {task_id} has task_status "
                                             f"{out.get('task_status')!r}, not one of {STATES}", task_id=task_id)
                    return out, resp.json().get("usage")
                err = from_http(resp.status, resp.body, f"polling task {task_id}", self.region_hint,
                                resp.retry_after(), task_id=task_id)
            self._retry_or_raise(err, attempt, task_id)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ cancel
    def cancel(self, task_id: str) -> bool:
        """Best effort: True when the server accepted the cancel (only queued tasks can be cancelled)."""
        try:
            resp = self.t.api("POST", f"{self.base}/tasks/{task_id}/cancel")
        except HostedAPIError:
            return False
        return resp.status == 200

    # ------------------------------------------------------------------ helpers
    def _retry_or_raise(self, err: HostedAPIError, attempt: int, task_id: Optional[str] = None) -> None:
        if not err.retryable:
            raise err
        if attempt >= self.policy.retries:
            what = "rate limit (429)" if err.kind == "rate_limit" else "server error / timeout"
            raise HostedAPIError(err.kind, f"{err} - still failing after {attempt} retries with backoff ({what}); "
                                 + ("try again in a minute or lower your request rate" if err.kind == "rate_limit"
                                    else "the service may be down: try again later"),
                                 status=err.status, code=err.code, task_id=task_id) from None
        wait = min(self.policy.retry_max_s, self.policy.retry_base_s * 2 ** attempt)
        wait *= 1 + 0.25 * random.random()
        if err.retry_after is not None:
            wait = max(wait, min(err.retry_after, self.policy.retry_max_s))
        self.retry_log.append(f"retry {attempt + 1} in {wait:.1f} s after: {err}")
        log.warning("HappyHorse API: %s; retry %d/%d in %.1f s", err, attempt + 1, self.policy.retries, wait)
        self._wait(wait, task_id)

    def _wait(self, seconds: float, task_id: Optional[str]) -> None:
        end = self._clock() + seconds
        while True:
            self._check_cancel(task_id)
            left = end - self._clock()
            if left <= 0:
                return
            self._sleep(min(self.policy.slice_s, left))

    def _check_cancel(self, task_id: Optional[str]) -> None:
        if not self.cancelled():
            return
        if task_id is None:
            raise HostedAPIError("cancelled_by_user", "cancelled before a task was created (nothing billed)")
        accepted = self.cancel(task_id)
        state = ("the service accepted the cancel: the task was still queued and is not billed" if accepted else
                 "a task that is already RUNNING cannot be cancelled: it finishes and is billed; fetch its video "
                 "within 24 h by putting this task id into HappyHorse 1.0 API Fetch Task")
        log.warning("HappyHorse API: polling of task %s stopped by Cancel", task_id)
        raise HostedAPIError("cancelled_by_user", f"cancelled: stopped polling task {task_id}; {state}",
                             task_id=task_id)


def _output(resp: Response, what: str) -> dict:
    try:
        data = resp.json()
    except ValueError:
        raise HostedAPIError("malformed", f"{what} is not JSON ({len(resp.body)} bytes starting with "
                             f"{resp.body[:60]!r}): check 'base_url' or try again") from None
    out = data.get("output") if isinstance(data, dict) else None
    if not isinstance(out, dict):
        raise HostedAPIError("malformed", f"{what} has no 'output' object: check 'base_url'")
    return out
