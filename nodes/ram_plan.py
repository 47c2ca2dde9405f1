"""The RAM plan: which big models hold system RAM, and releasing them when it runs short.

ComfyUI keeps every loader's output for as long as the workflow is cached, so a 1080p workflow
would otherwise hold the first-stage DiT, the SR DiT and T5Gemma in RAM together (~80 GB in bf16).
Loaded models register here (`track`) with a way to load them again. Before a model is loaded or
placed, `make_room(needed)` releases the OTHER tracked DiTs when the available RAM is below
`needed` + a margin (their weights go to the meta device; the RAM is returned), and
`ensure_loaded` reads a released model back from its file when it is used again. The text
encoder loader's `release_after_encoding` releases T5Gemma as soon as the prompt is encoded.

Pure Python + torch (and the core's module_bytes): the ComfyUI side (unloading a patcher from
ComfyUI's list) is passed in as `unload`, so the plan is testable without ComfyUI.
"""
from __future__ import annotations

import gc
import logging
import weakref
from typing import Any, Callable, Optional

import torch

from ..happyhorse_core.dit.offload import module_bytes

log = logging.getLogger("HappyHorse")

MARGIN_BYTES = 2 * 10**9  # head room for activations on the CPU side, the page cache and ComfyUI itself
_TRACKED: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()


def available_ram() -> int:
    """Bytes of system RAM available now (psutil), or a huge number when psutil is missing."""
    try:
        import psutil
    except ImportError:
        return 1 << 62
    return int(psutil.virtual_memory().available)


def is_released(loaded: Any) -> bool:
    return bool(getattr(loaded, "released", False))


def track(loaded: Any, reload: Callable[[], torch.nn.Module], nbytes: Optional[int] = None) -> Any:
    """Register a loader's output (an object with `.model` or `.encoder`) and how to load it again."""
    loaded.reload = reload
    loaded.nbytes = module_bytes(_module(loaded)) if nbytes is None else int(nbytes)
    loaded.released = False
    _TRACKED[id(loaded)] = loaded
    return loaded


def resident() -> list[Any]:
    """Tracked models whose weights are in memory now."""
    return [m for m in list(_TRACKED.values()) if not is_released(m)]


def _module(loaded: Any) -> torch.nn.Module:
    return loaded.encoder if hasattr(loaded, "encoder") else loaded.model


def release(loaded: Any, unload: Optional[Callable[[Any], None]] = None, why: str = "") -> None:
    """Drop a tracked model's weights from RAM (meta device); `ensure_loaded` brings them back."""
    if is_released(loaded):
        return
    if unload is not None and getattr(loaded, "patcher", None) is not None:
        unload(loaded.patcher)
    _module(loaded).to("meta")
    loaded.released = True
    gc.collect()
    log.info("HappyHorse: released %s (%.1f GB) from RAM%s; it is read again from its file when next used",
             getattr(loaded, "path", "a model"), loaded.nbytes / 1e9, f" ({why})" if why else "")


def ensure_loaded(loaded: Any, rewrap: Optional[Callable[[torch.nn.Module], Any]] = None,
                  unload: Optional[Callable[[Any], None]] = None) -> None:
    """Load a released model again (after making room); `rewrap` makes a new ComfyUI patcher for it."""
    if not is_released(loaded):
        return
    make_room(loaded.nbytes, keep=loaded, unload=unload)
    module = loaded.reload()
    if hasattr(loaded, "encoder"):
        loaded.encoder = module
    else:
        loaded.model = module
    if rewrap is not None and getattr(loaded, "patcher", None) is not None:
        loaded.patcher = rewrap(module)
    loaded.released = False


def before_use(loaded: Any, rewrap: Optional[Callable[[torch.nn.Module], Any]] = None,
               unload: Optional[Callable[[Any], None]] = None) -> None:
    """What a node does before running a tracked model: load it back if released, and release the
    others if RAM is short (e.g. the first-stage DiT before the SR DiT runs). "Short" means less
    available than this model's own size plus the margin: no room left to read another model of
    its size (the next loader or a reload) without the system swapping."""
    ensure_loaded(loaded, rewrap, unload)
    make_room(getattr(loaded, "nbytes", 0), keep=loaded, unload=unload)


def make_room(needed: int, keep: Any = None, unload: Optional[Callable[[Any], None]] = None,
              available: Callable[[], int] = None) -> list[Any]:
    """Release other tracked models, largest first, while available RAM < needed + MARGIN_BYTES.

    Returns what was released. Nothing is released when RAM suffices."""
    available = available or available_ram
    freed = []
    for other in sorted(resident(), key=lambda m: -m.nbytes):
        if available() >= needed + MARGIN_BYTES:
            break
        if other is keep:
            continue
        release(other, unload, why=f"RAM is short: {available() / 1e9:.1f} GB available, {needed / 1e9:.1f} GB needed")
        freed.append(other)
    return freed
