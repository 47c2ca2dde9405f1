"""Modality bookkeeping for the single-stream token sequence.

The packed sequence is always ordered [video | audio | text] (MODEL_SPEC §2.2), so a
modality is a contiguous slice of rows and per-modality "expert" weights can be applied by
slicing instead of gathering. `ModalitySplit` holds the three token counts and the helpers
that route rows to experts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .config import AUDIO, MODALITY_NAMES, TEXT, VIDEO


@dataclass(frozen=True)
class ModalitySplit:
    video: int  # number of video tokens Nv
    audio: int  # number of audio tokens F
    text: int  # number of text tokens n

    def __post_init__(self) -> None:
        for name, n in zip(MODALITY_NAMES, self.counts):
            if n < 0:
                raise ValueError(f"negative {name} token count {n}")

    @property
    def counts(self) -> tuple[int, int, int]:
        return (self.video, self.audio, self.text)

    @property
    def total(self) -> int:
        return self.video + self.audio + self.text

    def bounds(self, modality: int) -> tuple[int, int]:
        start = sum(self.counts[:modality])
        return start, start + self.counts[modality]

    def slice(self, modality: int) -> slice:
        return slice(*self.bounds(modality))

    def modality_ids(self, device: torch.device | str | None = None) -> torch.Tensor:
        """[L] int64: 0 video, 1 audio, 2 text (the reference's modality_mapping)."""
        return torch.repeat_interleave(torch.arange(3, device=device), torch.tensor(self.counts, device=device))

    def route(self, x: torch.Tensor, experts: int, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
        """Apply `fn(rows, expert_index)` to each modality's rows along dim 0 and re-join.

        With one expert the whole sequence goes through `fn(x, 0)` in one call.
        """
        if experts == 1:
            return fn(x, 0)
        parts = [fn(x[self.slice(m)], m) for m in (VIDEO, AUDIO, TEXT) if self.counts[m] > 0]
        return torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
