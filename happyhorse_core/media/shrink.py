"""Shrink a large picture early, so our own work on a start image is proportional to the clip, not the input.

A 50-megapixel photo for a 448x256 clip would otherwise be copied to float, cropped and resampled at
full size (several GB for one frame). `shrink_early` box-averages the centre crop by an integer
factor, one band of rows at a time, down to no less than twice the target size; the final
quality resize (Lanczos in ComfyUI, antialiased bicubic in the CLI) then runs on that small picture.
Pictures under four times the target on either side are returned unchanged (as float), so ordinary
inputs give exactly the pixels they gave before.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

BAND_OUTPUT_ROWS = 64  # output rows averaged per step (bounds the float copy of the input band)


def shrink_factor(height: int, width: int, target_h: int, target_w: int) -> int:
    """Integer box factor k >= 1 keeping the result >= 2x the target on both sides (1: leave as is)."""
    k = min(height // target_h, width // target_w) // 2
    return k if k >= 2 else 1


def shrink_early(image: torch.Tensor, target_w: int, target_h: int, divide: float = 1.0,
                 interrupt: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """[C, H, W] (any dtype; divided by `divide`, e.g. 255 for uint8) -> float32 [C, H/k, W/k].

    Box average over k x k pixels (k from shrink_factor), computed band by band so the float copy
    never exceeds BAND_OUTPUT_ROWS*k input rows; `interrupt` is called between bands.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be [channels, height, width], got {tuple(image.shape)}")
    c, h, w = image.shape
    k = shrink_factor(h, w, target_h, target_w)
    if k == 1:
        return image.float() / divide if divide != 1.0 else image.float()
    out_h, out_w = h // k, w // k
    rows = BAND_OUTPUT_ROWS * k
    bands = []
    for top in range(0, out_h * k, rows):
        if interrupt is not None:
            interrupt()
        band = image[:, top:min(top + rows, out_h * k), :out_w * k].float()  # [C, <=rows, out_w*k]
        bands.append(F.avg_pool2d(band[None], k)[0])  # [C, <=BAND_OUTPUT_ROWS, out_w]
    out = torch.cat(bands, dim=1)
    return out / divide if divide != 1.0 else out
