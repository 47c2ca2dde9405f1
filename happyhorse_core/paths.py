"""Say what is wrong with a path that is not a usable file: a broken or looping link is not a "missing file".

`os.path.isfile` is False both for a file that is not there and for a symlink whose target is gone
(or that points at itself); telling the user "put the file there" is wrong in the second case, since
something IS there. Loaders call `broken_link_message` before their "not found" message.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional


def broken_link_message(path: str | os.PathLike) -> Optional[str]:
    """A sentence about `path` when it is a link that cannot be followed, else None."""
    path = Path(path)
    if not os.path.lexists(path):
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return (f"{path} is a broken link: it is a symbolic-link loop (it points back to itself); "
                    "replace it with the real file or a link to it")
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return (f"{path} is a broken link: it points to {target}, which does not exist (moved or deleted); "
                "fix the link or replace it with the file")
    return None
