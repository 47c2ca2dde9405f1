"""Errors of the hosted API, each worded so the user knows what to do next.

The service answers a bad create/poll call with a non-2xx status and a flat body
``{"request_id", "code", "message"}``; a job that fails after acceptance comes back as HTTP 200 with
``output.task_status = FAILED`` and ``output.code / output.message``. Classification uses the code
first and the HTTP status second (only the 400 codes and FreeTierOnly -> 403 are on official pages).
"""
from __future__ import annotations

import json
from typing import Optional

from .keys import redact


class HostedAPIError(RuntimeError):
    """Anything that stopped a hosted generation. kind: auth / bad_request / rate_limit / server / task_failed /
    canceled / unknown_task / malformed / too_large / expired_url / network / cancelled_by_user / timeout."""

    def __init__(self, kind: str, message: str, *, status: Optional[int] = None, code: str = "",
                 task_id: Optional[str] = None, retry_after: Optional[float] = None):
        self.kind, self.status, self.code, self.task_id, self.retry_after = kind, status, code, task_id, retry_after
        if task_id and task_id not in message:
            message = f"{message} (task {task_id})"
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        return self.kind in ("rate_limit", "server")


def service_fields(body: bytes) -> tuple[str, str]:
    """(code, message) of a flat DashScope error body; ('', short text) when it is not JSON."""
    try:
        data = json.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        return "", redact(body[:200].decode("utf-8", errors="replace").strip())
    if not isinstance(data, dict):
        return "", redact(data)[:200]
    return redact(data.get("code") or "")[:100], redact(data.get("message") or "")[:500]


def from_http(status: int, body: bytes, what: str, region_hint: str = "",
              retry_after: Optional[float] = None, task_id: Optional[str] = None) -> HostedAPIError:
    """A non-2xx answer of the API (not of the result download) -> HostedAPIError with advice."""
    code, msg = service_fields(body)
    said = f"{status} {code}: {msg}".strip().rstrip(":") if code or msg else f"HTTP {status}"
    if status == 401 or code == "InvalidApiKey":
        return HostedAPIError("auth", f"{what} was refused ({said}). The API key is missing, wrong, or belongs to "
                              f"another region{region_hint}: the key, the model and the endpoint must all be in the "
                              "same region (a Singapore key does not work in Beijing). Check $DASHSCOPE_API_KEY or "
                              "ComfyUI/user/dashscope_api_key.txt and the node's 'region'.",
                              status=status, code=code, task_id=task_id)
    if status == 403 or code.startswith(("AccessDenied", "AllocationQuota")):
        hint = ("the free quota is used up while 'use free quota only' is on in the Model Studio console: switch "
                "it off or top up" if code.startswith("AllocationQuota") else
                "this key may not use this model or region: enable HappyHorse 1.0 for the key's workspace, or "
                "pick the region the key was created in")
        return HostedAPIError("auth", f"{what} was refused ({said}): {hint}.", status=status, code=code,
                              task_id=task_id)
    if status == 404 or code == "ModelNotFound":
        return HostedAPIError("bad_request", f"{what} failed ({said}): the model is not available at this endpoint; "
                              "HappyHorse 1.0 is served in Singapore and Beijing, check 'region' / 'base_url'.",
                              status=status, code=code, task_id=task_id)
    if status == 429 or code.startswith("Throttling"):
        return HostedAPIError("rate_limit", f"{what} was rate-limited ({said})", status=status, code=code,
                              retry_after=retry_after, task_id=task_id)
    if status >= 500:
        return HostedAPIError("server", f"{what} hit a server error ({said})", status=status, code=code,
                              retry_after=retry_after, task_id=task_id)
    advice = {
        "DataInspectionFailed": "the prompt or an input image/video was flagged by content moderation: change it",
        "Arrearage": "the Alibaba Cloud account has an overdue payment: settle it in the billing console",
        "InvalidURL": "a media URL could not be fetched by the service: use a public http(s) URL (or a data URL "
                      "for images)",
    }.get(code, "a parameter was rejected: fix the widget the message names")
    return HostedAPIError("bad_request", f"{what} was rejected ({said}): {advice}.", status=status, code=code,
                          task_id=task_id)


def task_failed(task_id: str, code: str, message: str) -> HostedAPIError:
    """A task that ended FAILED (final: not resubmitted automatically, it would cost again)."""
    advice = ("content moderation flagged the prompt, an input or the output: change the prompt or media"
              if code == "DataInspectionFailed" else
              "a parameter or input was rejected: fix it and queue again" if code.startswith("InvalidParameter") else
              "the service could not finish the job: queue again later (a failed task is not billed as video)")
    return HostedAPIError("task_failed", f"task {task_id} FAILED ({code or 'no code'}: {message or 'no message'}): "
                          f"{advice}", code=code, task_id=task_id)
