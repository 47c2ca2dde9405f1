"""Classifier-free guidance of daVinci-MagiHuman (MODEL_SPEC §4.2 step 4, §4.5 item 7).

The base model runs a conditional and a negative-prompt pass per step and mixes them as
v = v_u + s·(v_c − v_u), with separate scales for video and audio: video uses 5.0 while the
step's integer timestep is > 500 and 2.0 after that, audio always 5.0. The distilled model
runs without CFG (one conditional pass). When the SR stage runs with CFG, the video scale is
a per-latent-frame tensor: 3.5 everywhere except the first 13 latent frames, which get
min(2.0, 3.5) (the reference's "cfg trick" against over-exposure in image-to-video).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GuidanceConfig:
    video_scale: float = 5.0  # video CFG scale while timestep > video_switch_timestep
    video_scale_late: float = 2.0  # video CFG scale once timestep <= video_switch_timestep
    video_switch_timestep: int = 500  # integer timestep (0..999) of the switch
    audio_scale: float = 5.0  # audio CFG scale, every step
    sr_video_scale: float = 3.5  # SR stage video scale (only when the SR stage runs CFG)
    sr_cfg_trick: bool = True  # cap the scale of the first latent frames in the SR stage
    sr_cfg_trick_frames: int = 13  # how many leading latent frames get the cap
    sr_cfg_trick_value: float = 2.0  # the cap: those frames use min(value, sr_video_scale)

    def __post_init__(self) -> None:
        for name in ("video_scale", "video_scale_late", "audio_scale", "sr_video_scale", "sr_cfg_trick_value"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value != value or value < 0:
                raise ValueError(f"GuidanceConfig.{name} must be a number >= 0, got {value!r}")
        if self.sr_cfg_trick_frames < 0:
            raise ValueError(f"GuidanceConfig.sr_cfg_trick_frames must be >= 0 (reference: 13), "
                             f"got {self.sr_cfg_trick_frames}")


def apply_cfg(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """v = v_u + s·(v_c − v_u); `scale` is a float or a tensor broadcastable to the velocities."""
    if v_cond.shape != v_uncond.shape:
        raise ValueError(f"conditional and unconditional velocities differ in shape: "
                         f"{tuple(v_cond.shape)} vs {tuple(v_uncond.shape)}")
    return v_uncond + scale * (v_cond - v_uncond)


def video_scale(config: GuidanceConfig, timestep: int | torch.Tensor) -> float:
    """Video CFG scale of the base stage at an integer timestep (5.0 while t > 500, else 2.0)."""
    t = int(timestep)
    return config.video_scale if t > config.video_switch_timestep else config.video_scale_late


def sr_video_scale(config: GuidanceConfig, num_latent_frames: int,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Per-latent-frame video CFG scale of the SR stage, shaped [1, 1, T, 1, 1] (fp32) so it
    broadcasts over a [B, 48, T, h, w] velocity; `[0, 0, :, 0, 0]` gives the [T] table."""
    if num_latent_frames < 1:
        raise ValueError(f"num_latent_frames must be >= 1, got {num_latent_frames}")
    scale = torch.full((1, 1, num_latent_frames, 1, 1), config.sr_video_scale, dtype=torch.float32, device=device)
    if config.sr_cfg_trick:
        scale[:, :, : config.sr_cfg_trick_frames] = min(config.sr_cfg_trick_value, config.sr_video_scale)
    return scale
