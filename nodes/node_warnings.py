"""Warnings a user must see on the node itself, not only in the console.

Python's `warnings` module shows a message once per place in the code, so a second run with the
same problem would say nothing; these helpers log every time (with the pack's "HappyHorse:" prefix)
and put the text under the node in the UI (ComfyUI's progress text, sent through comfy_bridge).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterable, Optional

from . import comfy_bridge as cb

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
        cb.progress_text(str(node_id), "\n".join(f"⚠ {m}" for m in messages))


@contextlib.contextmanager
def collect(node_id: Optional[str]):
    """Gather the warnings of one node run and show them together at its end (also when it fails).

    Yields `note(message)` for the node's own messages; the core's Python warnings raised inside the
    block (SizeRoundedWarning, ImageBatchWarning, ...) are caught with the "always" filter, so each run
    reports them again instead of only the first time in the process.
    """
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield notes.append
        finally:
            notes.extend(str(w.message) for w in caught)
            warn_all(node_id, notes)
