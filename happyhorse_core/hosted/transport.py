"""HTTP for the hosted API with the standard library only (urllib), so the pack gains no dependency.

Two kinds of request:
  * API calls (create, poll, cancel, upload policy) carry ``Authorization: Bearer <key>``. They never
    follow redirects: urllib would resend the header to whatever host a redirect names.
  * Result downloads and temporary-storage uploads go to OSS with the URL's own signature and NO
    Authorization header. Downloads stream to a file with a byte cap and a socket timeout, and the
    file must start like an MP4 before anyone decodes it.
"""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import HostedAPIError
from .keys import redact

USER_AGENT = "ComfyUI-HappyHorse-hosted/1"
CHUNK = 1 << 16


@dataclass
class Response:
    status: int
    headers: dict   # lower-case names
    body: bytes

    def json(self) -> object:
        return json.loads(self.body.decode("utf-8"))

    def retry_after(self) -> Optional[float]:
        try:
            return max(0.0, float(self.headers.get("retry-after", "")))
        except ValueError:
            return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise HostedAPIError("malformed", f"the API answered a redirect ({code}) to {redact(newurl)[:120]}; it is not "
                             "followed so the key is not sent elsewhere: check 'base_url'", status=code)


_API_OPENER = urllib.request.build_opener(_NoRedirect())
_PLAIN_OPENER = urllib.request.build_opener()


class Transport:
    """Sends requests; returns every HTTP status as a Response (only network failures raise)."""

    def __init__(self, api_key: str, timeout: float = 60.0):
        self._key = api_key
        self.timeout = timeout

    def api(self, method: str, url: str, body: Optional[dict] = None, headers: Optional[dict] = None) -> Response:
        hdrs = {"Authorization": f"Bearer {self._key}", "User-Agent": USER_AGENT, **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        return self._send(_API_OPENER, urllib.request.Request(url, data=data, method=method, headers=hdrs), url)

    def plain(self, method: str, url: str, data: Optional[bytes] = None, headers: Optional[dict] = None) -> Response:
        """A request without the API key (OSS upload host)."""
        hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
        return self._send(_PLAIN_OPENER, urllib.request.Request(url, data=data, method=method, headers=hdrs), url)

    def _send(self, opener, req: urllib.request.Request, url: str) -> Response:
        try:
            with opener.open(req, timeout=self.timeout) as r:
                return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
        except urllib.error.HTTPError as e:
            with e:
                return Response(e.code, {k.lower(): v for k, v in (e.headers or {}).items()}, e.read())
        except (socket.timeout, TimeoutError) as e:
            raise HostedAPIError("timeout", f"no answer from {self.where(url)} within {self.timeout:g} s "
                                 f"({redact(e, self._key)})") from None
        except urllib.error.URLError as e:
            raise HostedAPIError("network", f"cannot reach {self.where(url)} ({redact(e.reason, self._key)}): "
                                 "check the network, the proxy settings and 'region' / 'base_url'") from None

    @staticmethod
    def where(url: str) -> str:
        """scheme://host/path of a URL without its query (pre-signed URLs carry signatures there)."""
        return redact(url.split("?", 1)[0])

    def download(self, url: str, dest: Path, max_bytes: int, timeout: float,
                 cancelled: Callable[[], bool] = lambda: False) -> int:
        """Stream a result URL to dest (no Authorization header); returns the byte count. Raises on an
        expired/forbidden URL, on more than max_bytes, and when the bytes are not an MP4."""
        req = urllib.request.Request(url, method="GET", headers={"User-Agent": USER_AGENT})
        where = self.where(url)
        try:
            with _PLAIN_OPENER.open(req, timeout=timeout) as r, open(dest, "wb") as f:
                length = r.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > max_bytes:
                    raise _too_large(where, int(length), max_bytes, exact=True)
                total = 0
                while chunk := r.read(CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise _too_large(where, total, max_bytes, exact=False)
                    if cancelled():
                        raise HostedAPIError("cancelled_by_user", "cancelled while downloading the result")
                    f.write(chunk)
        except urllib.error.HTTPError as e:
            with e:
                text = e.read(2000).decode("utf-8", errors="replace")
            if e.code in (403, 404, 410) or "<Code>AccessDenied</Code>" in text:
                raise HostedAPIError("expired_url", f"the result URL {where} was refused ({e.code}"
                                     f"{', AccessDenied' if 'AccessDenied' in text else ''}): result links work for "
                                     "24 h after the task ends; an older task cannot be fetched, queue it again",
                                     status=e.code) from None
            raise HostedAPIError("server" if e.code >= 500 else "network",
                                 f"downloading the result from {where} failed (HTTP {e.code})", status=e.code) from None
        except (socket.timeout, TimeoutError):
            raise HostedAPIError("timeout", f"the result download from {where} stalled for {timeout:g} s") from None
        except urllib.error.URLError as e:
            raise HostedAPIError("network", f"cannot download the result from {where} ({e.reason})") from None
        with open(dest, "rb") as f:
            head = f.read(12)
        if len(head) < 12 or head[4:8] != b"ftyp":
            raise HostedAPIError("malformed", f"the result from {where} is not an MP4 ({total} bytes starting with "
                                 f"{head[:12]!r})")
        return total


def _too_large(where: str, size: int, cap: int, exact: bool) -> HostedAPIError:
    return HostedAPIError("too_large", f"the result at {where} is larger than the {cap / 2**20:g} MiB limit "
                          f"({'' if exact else 'at least '}{size} bytes); the download was stopped: raise "
                          "'max_download_mb' if such a file is expected")
