"""The pack's exception types: one per kind of failure, so callers and tests can tell them apart.

- `CheckpointError` (a ValueError): a weights file that exists but cannot be used (damaged header,
  wrong model, wrong dtype, NaN values, missing keys ...). The message names the file and what to do.
- plain `ValueError`: a bad user input (widget value, size, prompt, latent from the wrong node).
- `FileNotFoundError`: a path that does not exist (the message says where the file belongs).
"""
from __future__ import annotations


class CheckpointError(ValueError):
    """A weights file that exists but cannot be used; the message says which file and what to do."""
