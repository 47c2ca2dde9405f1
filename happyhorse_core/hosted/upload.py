"""Model Studio temporary storage: put a local file where the service can read it, as an ``oss://`` URL.

Documented for Model Studio in general (Beijing region only as of Mar 2026; files expire after 48 h and
are tied to the model named in the policy request); not stated on the HappyHorse pages, hence optional:
  1. GET {base}/uploads?action=getPolicy&model=<model id>  (Bearer key) -> data{policy, signature, ...}
  2. multipart POST to data.upload_host with the policy fields and the file LAST (no API key: OSS checks
     the policy signature)
  3. media url ``oss://<upload_dir>/<name>``; the create call then needs X-DashScope-OssResourceResolve.
The policy field names come from community clients (unconfirmed); a missing field is reported by name.
"""
from __future__ import annotations

import urllib.parse
import uuid

from .errors import HostedAPIError, from_http
from .transport import Transport

POLICY_FIELDS = ("policy", "signature", "upload_dir", "upload_host", "oss_access_key_id")


def get_policy(t: Transport, base_url: str, model: str) -> dict:
    url = f"{base_url.rstrip('/')}/uploads?" + urllib.parse.urlencode({"action": "getPolicy", "model": model})
    resp = t.api("GET", url)
    if resp.status != 200:
        raise from_http(resp.status, resp.body, "asking for an upload policy (temporary storage)")
    try:
        data = resp.json().get("data")
    except (ValueError, AttributeError):
        data = None
    missing = [f for f in POLICY_FIELDS if not isinstance(data, dict) or not data.get(f)]
    if missing:
        raise HostedAPIError("malformed", f"the upload policy answer lacks {missing}: temporary storage may not exist "
                             "in this region (it is documented for Beijing only); give a public URL instead")
    return data


def multipart(fields: list[tuple[str, str]], file_name: str, content: bytes, mime: str) -> tuple[bytes, str]:
    """A multipart/form-data body with the text fields first and the file last; returns (body, content type)."""
    boundary = "----hh" + uuid.uuid4().hex
    parts = []
    for name, value in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
                 f"Content-Type: {mime}\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def upload(t: Transport, base_url: str, model: str, content: bytes, file_name: str, mime: str) -> str:
    """Upload bytes to temporary storage for `model`; returns the oss:// URL to put in media[].url."""
    pol = get_policy(t, base_url, model)
    max_mb = pol.get("max_file_size_mb")
    if isinstance(max_mb, (int, float)) and len(content) > max_mb * 2**20:
        raise HostedAPIError("too_large", f"{file_name} is {len(content) / 2**20:.1f} MB; temporary storage takes at "
                             f"most {max_mb} MB")
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in file_name)
    key = f"{pol['upload_dir'].rstrip('/')}/{uuid.uuid4().hex[:8]}_{safe}"
    fields = [("OSSAccessKeyId", pol["oss_access_key_id"]), ("Signature", pol["signature"]),
              ("policy", pol["policy"]), ("x-oss-object-acl", str(pol.get("x_oss_object_acl", "private"))),
              ("x-oss-forbid-overwrite", str(pol.get("x_oss_forbid_overwrite", "true"))), ("key", key),
              ("success_action_status", "200")]
    body, ctype = multipart(fields, safe, content, mime)
    resp = t.plain("POST", pol["upload_host"], body, {"Content-Type": ctype})
    if resp.status not in (200, 204):
        raise HostedAPIError("bad_request", f"uploading {file_name} to temporary storage failed (HTTP {resp.status}: "
                             f"{resp.body[:200].decode('utf-8', errors='replace')})", status=resp.status)
    return f"oss://{key}"
