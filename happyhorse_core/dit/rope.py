"""3-axis rotary embedding ("ElementWiseFourierEmbed", MODEL_SPEC §1.5).

Each token carries coords (t, h, w, T, H, W, refT, refH, refW): its position, the grid size of
its modality and a reference size. Per axis, angle = (coord - centre) * scale * band with
scale = (ref - 1) / (size - 1) (1 where ref = size = 1), h and w centred by (size - 1) / 2,
t not centred. 16 bands per axis for head_dim 128 -> a [L, 96] table (48 sin | 48 cos) that
rotates only the first 96 of the 128 head dims, rotate-half style (dim i pairs with i + 48).
"""
from __future__ import annotations

import torch
from torch import nn


def rope_bands(num_bands: int, device=None) -> torch.Tensor:
    """band_k = 10000 ** (-k / num_bands), k = 0..num_bands-1, fp32."""
    return 1.0 / (10000.0 ** (torch.arange(num_bands, dtype=torch.float32, device=device) / num_bands))


class RopeTable(nn.Module):
    """Holds the deterministic `bands` buffer (key `adapter.rope.bands`) and builds tables."""

    def __init__(self, head_dim: int, device=None) -> None:
        super().__init__()
        self.register_buffer("bands", rope_bands(head_dim // 8, device=None if device == "meta" else device))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """coords [L, 9] fp32 -> table [L, 6B] = sin(t,h,w bands) | cos(t,h,w bands).

        The 16-float `bands` buffer follows `coords` (a partial load may leave it on the CPU).
        """
        return rope_table(coords, self.bands.to(coords.device))


def rope_table(coords: torch.Tensor, bands: torch.Tensor) -> torch.Tensor:
    coords = coords.float()
    pos, size, ref = coords[:, 0:3], coords[:, 3:6], coords[:, 6:9]  # each [L, 3]
    same = (ref == 1) & (size == 1)
    scale = torch.where(same, torch.ones_like(ref), (ref - 1) / (size - 1))
    centre = torch.zeros_like(size)
    centre[:, 1:] = (size[:, 1:] - 1) / 2  # h and w centred, t not
    angles = ((pos - centre) * scale).unsqueeze(-1) * bands.float()  # [L, 3, B]
    return torch.cat([angles.sin().flatten(1), angles.cos().flatten(1)], dim=1)  # [L, 6B]


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate the first 3/4 of each head. x [L, H, D] fp32, table [L, 6B] -> [L, H, D]."""
    half = table.shape[1] // 2  # 48 for head_dim 128
    sin = table[:, None, :half]
    cos = table[:, None, half:]
    x1, x2, rest = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


def apply_rope_(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """`apply_rope` in place on fp32 x [L, H, D]: same numbers, no cat, dims >= 6B untouched."""
    half = table.shape[1] // 2
    sin = table[:, None, :half]
    cos = table[:, None, half:]
    x1, x2 = x[..., :half], x[..., half:2 * half]
    x1_sin = x1 * sin  # the old x1 is needed by x2' = x2·c + x1·s
    x1.mul_(cos).sub_(x2 * sin)
    x2.mul_(cos).add_(x1_sin)
    return x
