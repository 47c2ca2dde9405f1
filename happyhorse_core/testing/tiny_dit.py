"""Deterministic tiny random DiTs for tests, the `--tiny` CLI and the built-in demo weights.

Same structure as the real model (sandwich experts, GQA, gates, both MLP kinds), small widths.
Weights are drawn like the golden cases: norm offsets ~ N(0, 0.1), biases ~ N(0, 0.02),
matrices ~ N(0, 1/fan_in), from one seeded generator in state_dict order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..dit.config import PRESETS, DiTConfig
from ..dit import SandwichDiT
from ..dit.ops import Ops
from ..weights.safetensors_io import write_safetensors

TINY_VARIANTS = {"distill": "tiny", "base": "tiny", "sr_540p": "tiny_sr", "sr_1080p": "tiny_sr"}


def tiny_config(variant: str = "distill") -> DiTConfig:
    if variant not in TINY_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(TINY_VARIANTS)}")
    cfg = PRESETS[TINY_VARIANTS[variant]]
    return cfg if variant != "sr_540p" else cfg.replace(local_attn_layers=())


def init_random_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("rope.bands"):
                continue
            if t.ndim == 1:
                std = 0.02 if name.endswith("bias") else 0.1
            else:
                std = t.shape[1] ** -0.5
            t.copy_((torch.randn(t.shape, generator=g) * std).to(t.dtype))
    return model


def tiny_dit(variant: str = "distill", seed: int = 0, compute_dtype: torch.dtype = torch.bfloat16) -> SandwichDiT:
    """A tiny random SandwichDiT; the same seed always gives the same weights."""
    model = SandwichDiT(tiny_config(variant), Ops(compute_dtype=compute_dtype))
    return init_random_(model, seed).eval()


def write_tiny_dit(path: str | Path, variant: str = "distill", seed: int = 0) -> Path:
    """Save a tiny DiT as one safetensors file in the official layout (reference key names)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in tiny_dit(variant, seed).state_dict().items()}
    write_safetensors(path, sd, metadata={"happyhorse": f"tiny random {variant} DiT, seed {seed} (test weights)"})
    return path


def tiny_dit_inputs(model: SandwichDiT, seed: int = 1, device: Optional[torch.device] = None) -> tuple:
    """Inputs of one small denoiser call for `model`: (video, audio, text, coords, tokens_per_frame).

    video [8, Cv] (2 frames of a 2x2 token grid, 4 tokens per frame), audio [5, Ca], text [4, Ct], all
    seeded N(0, 1) draws; coords [17, 9] written by hand: video rows (t, h, w) then size columns 2, audio
    and text rows numbered along column 0 with size columns 1. On `device` (None: the CPU).
    """
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    nv, na, nt = 8, 5, 4
    video = torch.randn(nv, cfg.video_in_channels, generator=g)
    audio = torch.randn(na, cfg.audio_in_channels, generator=g)
    text = torch.randn(nt, cfg.text_in_channels, generator=g)
    coords = torch.zeros(nv + na + nt, 9)
    coords[:nv, 0] = torch.arange(nv) // 4
    coords[:nv, 1] = torch.arange(nv) % 4 // 2
    coords[:nv, 2] = torch.arange(nv) % 2
    coords[:nv, 3:9] = 2.0
    coords[nv:, 0] = torch.arange(na + nt).float()
    coords[nv:, 3:9] = 1.0
    video, audio, text, coords = (t.to(device) if device is not None else t for t in (video, audio, text, coords))
    return video, audio, text, coords, 4
