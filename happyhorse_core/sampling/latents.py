"""Latent spaces at the host boundary.

Hosts (ComfyUI LATENTs, VAE encoders) hold RAW Wan2.2 VAE latents; the DiT works on latents
normalised per channel: z_model = (z_raw - mean) / std (MODEL_SPEC §7.1). Audio latents from the
Stable Audio VAE enter the DiT unchanged, time-major [1, F, 64] (hosts keep [B, 64, F]).
Inputs are checked by validation.check_video_latent / check_audio_latent (the host-boundary checks).
"""
from __future__ import annotations

import torch

from ..geometry import WAN22_LATENT_MEAN, WAN22_LATENT_STD
from ..validation import check_audio_latent, check_video_latent


def _stats(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, len(WAN22_LATENT_MEAN), 1, 1, 1)
    mean = torch.tensor(WAN22_LATENT_MEAN, dtype=torch.float32, device=like.device).view(shape)
    std = torch.tensor(WAN22_LATENT_STD, dtype=torch.float32, device=like.device).view(shape)
    return mean, std


def video_to_model(raw: torch.Tensor) -> torch.Tensor:
    """Raw Wan2.2 latent [B, 48, T, h, w] -> model space (fp32)."""
    check_video_latent(raw)
    mean, std = _stats(raw)
    return (raw.float() - mean) / std


def video_from_model(z: torch.Tensor) -> torch.Tensor:
    """Model-space latent [B, 48, T, h, w] -> raw Wan2.2 latent (fp32)."""
    check_video_latent(z)
    mean, std = _stats(z)
    return z.float() * std + mean


def audio_to_model(raw: torch.Tensor) -> torch.Tensor:
    """Host audio latent [B, 64, F] -> DiT layout [B, F, 64]."""
    check_audio_latent(raw)
    return raw.float().transpose(1, 2).contiguous()


def audio_from_model(z: torch.Tensor) -> torch.Tensor:
    """DiT audio latent [B, F, 64] -> host layout [B, 64, F]."""
    return z.float().transpose(1, 2).contiguous()
