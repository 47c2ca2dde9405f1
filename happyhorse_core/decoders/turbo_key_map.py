"""Checkpoint key names -> Turbo-VAED module keys (shared by the loader and the pickle reader)."""
from __future__ import annotations

from typing import Sequence

PREFIX = "decoder."


def canonical_key_map(names: Sequence[str]) -> dict[str, str]:
    """File key -> module key: strip leading `module.`; add `decoder.` when no key carries it."""
    stripped = {}
    for name in names:
        key = name
        while key.startswith("module."):
            key = key[len("module.") :]
        stripped[name] = key
    has_prefix = any(key.startswith(PREFIX) for key in stripped.values())
    mapping = {name: key if has_prefix else PREFIX + key for name, key in stripped.items()}
    seen: dict[str, str] = {}
    for name, key in mapping.items():
        if key in seen:
            raise ValueError(
                f"tensors {seen[key]!r} and {name!r} both map to {key!r}; the file holds duplicate weights"
            )
        seen[key] = name
    return mapping
