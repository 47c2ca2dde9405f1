"""Latent spaces at the host boundary.

Hosts (ComfyUI LATENTs, VAE encoders) hold RAW Wan2.2 VAE latents; the DiT works on latents
normalised per channel: z_model = (z_raw - mean) / std (MODEL_SPEC §7.1). Audio latents from the
Stable Audio VAE enter the DiT unchanged, time-major [1, F, 64] (hosts keep [B, 64, F]).
"""
from __future__ import annotations

import torch

from ..decoders.turbo_config import WAN22_LATENT_MEAN, WAN22_LATENT_STD


def _stats(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, len(WAN22_LATENT_MEAN), 1, 1, 1)
    mean = torch.tensor(WAN22_LATENT_MEAN, dtype=torch.float32, device=like.device).view(shape)
    std = torch.tensor(WAN22_LATENT_STD, dtype=torch.float32, device=like.device).view(shape)
    return mean, std


def video_to_model(raw: torch.Tensor) -> torch.Tensor:
    """Raw Wan2.2 latent [B, 48, T, h, w] -> model space (fp32)."""
    _check_video(raw)
    mean, std = _stats(raw)
    return (raw.float() - mean) / std


def video_from_model(z: torch.Tensor) -> torch.Tensor:
    """Model-space latent [B, 48, T, h, w] -> raw Wan2.2 latent (fp32)."""
    _check_video(z)
    mean, std = _stats(z)
    return z.float() * std + mean


def audio_to_model(raw: torch.Tensor) -> torch.Tensor:
    """Host audio latent [B, 64, F] -> DiT layout [B, F, 64]."""
    if raw.ndim != 3 or raw.shape[1] != 64:
        raise ValueError(f"audio latent must be [B, 64, F] (Stable Audio VAE space), got {list(raw.shape)}")
    return raw.float().transpose(1, 2).contiguous()


def audio_from_model(z: torch.Tensor) -> torch.Tensor:
    """DiT audio latent [B, F, 64] -> host layout [B, 64, F]."""
    return z.float().transpose(1, 2).contiguous()


def _check_video(x: torch.Tensor) -> None:
    if x.ndim != 5 or x.shape[1] != len(WAN22_LATENT_MEAN):
        raise ValueError(f"video latent must be [B, 48, T, h, w] (Wan2.2 VAE space), got {list(x.shape)}; "
                         "use a Wan2.2 (48-channel) latent, not a Wan2.1 / SD one")
    if not torch.isfinite(x).all():
        raise ValueError("video latent contains NaN or Inf; check the node that produced it")
