"""Tensors that stay the same across the denoising steps of one clip.

Over a sampling run the DiT sees the same prompt embedding (one or two prompts with CFG) and the
same token geometry at every step, so the text embedder output, the device copy of the text
features and the RoPE table only need computing once per prompt. `StepCache` memoises them by
the identity and in-place version counter of the source tensor (and keeps the source alive, so
an id is never reused while cached): mutating the source in place, or passing a new tensor,
recomputes. Hosts create one per sampling run (the pipeline's `Denoiser` does).

Tensors made under `torch.inference_mode()` (ComfyUI runs every node that way) have no version
counter; for them the key is the identity alone. Nothing in a sampling run writes into the text
features or coordinates, and the cache lives for one run, so identity is enough there.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable

import torch


class StepCache:
    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, kind: Hashable, source: torch.Tensor, make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """make(source), computed once per (kind, source tensor, source version)."""
        version = -1 if source.is_inference() else source._version
        key = (kind, id(source), version)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is source:
            self.hits += 1
            self._entries.move_to_end(key)
            return hit[1]
        self.misses += 1
        value = make(source)
        self._entries[key] = (source, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
