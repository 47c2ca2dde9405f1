"""Where the Model Studio API key comes from, and how it is kept out of every message.

The key is never a node widget (widget values are saved into workflow JSON and into the PNG/mp4 metadata
SaveVideo writes). It is read, at run time only, from the environment variable DASHSCOPE_API_KEY or from
a one-line file ``dashscope_api_key.txt`` at the top of ComfyUI's user directory (ComfyUI/user/; not in
user/default/, whose files the /userdata API serves to the browser).

Every error text that could contain server or URL material goes through ``redact()``, and the
``RedactingFilter`` strips the key from any log record of the handlers it is attached to.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Optional

ENV_VAR = "DASHSCOPE_API_KEY"
KEY_FILE = "dashscope_api_key.txt"
MASK = "sk-***"
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")       # DashScope keys start with sk-
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",]+")


class MissingKeyError(RuntimeError):
    pass


def key_file_path(user_dir: Optional[str | os.PathLike]) -> Optional[Path]:
    return Path(user_dir) / KEY_FILE if user_dir else None


def load_api_key(user_dir: Optional[str | os.PathLike] = None, environ: Optional[dict] = None) -> str:
    """The key from $DASHSCOPE_API_KEY, else from <user_dir>/dashscope_api_key.txt (first non-empty line).
    MissingKeyError says where to put one; the message never contains a key."""
    env = os.environ if environ is None else environ
    key = (env.get(ENV_VAR) or "").strip()
    if key:
        return _checked(key, f"${ENV_VAR}")
    path = key_file_path(user_dir)
    if path is not None and path.is_file():
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        key = next((ln for ln in lines if ln and not ln.startswith("#")), "")
        if key:
            return _checked(key, str(path))
    where = f" or put it alone on one line in {path}" if path is not None else ""
    raise MissingKeyError(
        f"no Model Studio API key: set the environment variable {ENV_VAR} before starting ComfyUI{where}. "
        "Create a key in the Model Studio console of the region you call (Singapore or Beijing); it is never "
        "a node widget, so it is not saved in workflows or videos.")


def _checked(key: str, source: str) -> str:
    if any(c.isspace() for c in key) or not key.isprintable():
        raise MissingKeyError(f"the API key in {source} contains spaces or control characters: keep only the "
                              "key itself (one line)")
    return key


def redact(text: object, *secrets: Optional[str]) -> str:
    """text with every given secret, anything after 'Bearer ' and anything shaped like an sk- key masked."""
    out = str(text)
    for s in secrets:
        if s:
            out = out.replace(s, MASK)
    out = _BEARER.sub(lambda m: m.group(1) + MASK, out)
    return _KEY_LIKE.sub(MASK, out)


class RedactingFilter(logging.Filter):
    """A logging filter that masks the key in the formatted message of every record it sees."""

    def __init__(self, *secrets: str):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg, *self.secrets)
        if clean != msg:
            record.msg, record.args = clean, None
        return True
