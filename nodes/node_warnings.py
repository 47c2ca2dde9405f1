"""Warnings a user must see on the node itself, not only in the console.

Python's `warnings` module shows a message once per place in the code, so a second run with the
same problem would say nothing; these helpers log every time (with the pack's "HappyHorse:" prefix)
and put the text under the node in the UI (ComfyUI's progress text). Import inside execute().
"""
from __future__ import annotations

import logging
from typing import Iterable, Optional

log = logging.getLogger("HappyHorse")


def warn(node_id: Optional[str], message: str) -> None:
    """Log `message` as a warning and show it on node `node_id` (None: log only)."""
    warn_all(node_id, [message])


def warn_all(node_id: Optional[str], messages: Iterable[str]) -> None:
    """Log each message; show them together on the node (a later text replaces an earlier one there)."""
    messages = [m for m in messages if m]
    for m in messages:
        log.warning("HappyHorse: %s", m)
    if messages and node_id is not None:
        from . import comfy_bridge as cb
        cb.progress_text(str(node_id), "\n".join(f"⚠ {m}" for m in messages))
