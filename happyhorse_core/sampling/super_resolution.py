"""Latent super-resolution: lift a 256p clip to 540p / 1080p in latent space (MODEL_SPEC §4.5-4.6).

1. trilinear upsample of the final base video latent to the SR latent size (align_corners);
2. VP-style re-noise x = a·x_up + sqrt(1 - a²)·ε with a = zero-SNR sigma[renoise_index]
   (reference: index 220, a = 0.8389; index 0 skips the re-noise and draws no noise for it);
3. the SR DiT (v1 coordinates; the 1080p model with windowed attention) runs 5 UniPC steps
   from sigma 0.9998, conditional only by default (the published SR configs disable CFG); with
   CFG the video scale is guidance.sr_video_scale (reference 3.5; the first 13 latent frames are
   capped at 2.0);
4. audio is context only: 0.7·ε + 0.3·base audio goes in, the base audio comes out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from ..geometry import _as_int
from .guidance import GuidanceConfig, apply_cfg, sr_video_scale
from .noise import randn
from .pipeline import Denoiser, Hooks, TextConditioning, check_finite, check_text
from .scheduler import (NUM_TRAIN_TIMESTEPS, SR_RENOISE_INDEX, FlowUniPC, sr_audio_context, sr_renoise,
                        zero_snr_sigmas)

SR_TARGETS = {"540p": (512, 896), "1080p": (1088, 1920)}  # (height, width) for 16:9


@dataclass
class SROptions:
    steps: int = 5
    shift: float = 5.0
    cfg: bool = False  # published configs: conditional only
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)  # sr_video_scale = the SR CFG scale
    renoise_index: int = SR_RENOISE_INDEX  # 0 = no re-noise; higher = more noise on the upsampled clip

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"SR steps must be at least 1, got {self.steps}")
        if not 0 <= int(self.renoise_index) < NUM_TRAIN_TIMESTEPS:
            raise ValueError(f"SR renoise_index must be 0..{NUM_TRAIN_TIMESTEPS - 1} (reference: 220), "
                             f"got {self.renoise_index}")

    @property
    def renoise_keep(self) -> float:
        """a of the re-noise: the share of the upsampled clip kept (1.0 at index 0)."""
        return float(zero_snr_sigmas()[int(self.renoise_index)])


def sr_latent_size(height: int, width: int) -> tuple[int, int]:
    """Pixel target -> even latent (h, w): sr_latent = size // 16 // 2 * 2."""
    height, width = _as_int(height, "SR target height"), _as_int(width, "SR target width")
    h, w = height // 16 // 2 * 2, width // 16 // 2 * 2
    if h < 2 or w < 2:
        raise ValueError(f"SR target {width}x{height} is too small; use at least 64x64 pixels")
    return h, w


def upsample_latent(video: torch.Tensor, latent_h: int, latent_w: int) -> torch.Tensor:
    """[1, 48, T, h, w] -> [1, 48, T, H, W], trilinear, align_corners=True."""
    return F.interpolate(video.float(), size=(video.shape[2], latent_h, latent_w), mode="trilinear",
                         align_corners=True)


def super_resolve(model: torch.nn.Module, video: torch.Tensor, audio: torch.Tensor, text: TextConditioning, *,
                  latent_h: int, latent_w: int, generator: torch.Generator, opts: Optional[SROptions] = None,
                  image_latent: Optional[torch.Tensor] = None, hooks: Optional[Hooks] = None,
                  device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine a base-stage clip at the SR latent size. Returns (video [1, 48, T, H, W], base audio)."""
    opts, hooks = opts or SROptions(), hooks or Hooks()
    if model.config.coords_style != "v1":
        raise ValueError("this DiT was loaded as a base/distill model; load the SR checkpoint with variant "
                         "sr_540p or sr_1080p for the super-resolution stage")
    _check_sr_inputs(model, video, audio, text, latent_h, latent_w, opts)
    if image_latent is not None and tuple(image_latent.shape) != (1, 48, 1, latent_h, latent_w):
        raise ValueError(f"SR image latent must be [1, 48, 1, {latent_h}, {latent_w}], got {list(image_latent.shape)}")
    check_finite(image_latent, "SR first-frame image latent")
    up = upsample_latent(video, latent_h, latent_w)  # [1, 48, T, H, W]
    x = up
    if opts.renoise_index:  # reference order: video re-noise first, then the audio context noise
        x = sr_renoise(up, randn(up.shape, generator).to(up.device), opts.renoise_keep)
    audio_ctx = sr_audio_context(audio.float(), randn(audio.shape, generator).to(audio.device))  # [1, F, 64]
    denoise, unipc = Denoiser(model, device), FlowUniPC(opts.steps, opts.shift)
    scale = sr_video_scale(opts.guidance, x.shape[2]) if opts.cfg else None
    for i in range(opts.steps):
        hooks.before_step()
        if image_latent is not None:
            x[:, :, :1] = image_latent
        v, _ = denoise(x, audio_ctx, text.positive)
        if opts.cfg:
            if hooks.interrupt is not None:  # a CFG step is two forwards: allow Cancel between them
                hooks.interrupt()
            u, _ = denoise(x, audio_ctx, text.negative)
            v = apply_cfg(v, u, scale)
        x0 = x - unipc.sigmas[i] * v
        x = unipc.step_x0(x0, i, x)
        hooks.after_step(i + 1, opts.steps, x0)
    if image_latent is not None:
        x[:, :, :1] = image_latent
    return x.cpu(), audio


def _check_sr_inputs(model: torch.nn.Module, video: torch.Tensor, audio: torch.Tensor, text: TextConditioning,
                     latent_h: int, latent_w: int, opts: SROptions) -> None:
    """Shapes and values the SR stage needs, checked before any work (messages say which input to fix)."""
    if video.ndim != 5 or video.shape[:2] != (1, 48) or min(video.shape[2:]) < 1:
        raise ValueError(f"SR input must be a video latent [1, 48, T, h, w], got {list(video.shape)}")
    if audio.ndim != 3 or audio.shape[0] != 1 or audio.shape[2] != 64:
        raise ValueError(f"SR audio must be the base audio latent in DiT layout [1, F, 64], got {list(audio.shape)}")
    t, f = video.shape[2], audio.shape[1]
    if (f - 1) // 4 + 1 != t:
        raise ValueError(f"the audio latent ({f} frames) does not belong to the video latent ({t} latent frames); "
                         "pass both outputs of the same base sampler run")
    if latent_h < 2 or latent_w < 2 or latent_h % 2 or latent_w % 2:
        raise ValueError(f"SR latent size must be even and at least 2x2, got {latent_h}x{latent_w}; "
                         "compute it with sr_latent_size() / validation.sr_latent_hw()")
    if latent_h < video.shape[3] or latent_w < video.shape[4]:
        raise ValueError(f"SR latent size {latent_h}x{latent_w} is smaller than the base latent "
                         f"{video.shape[3]}x{video.shape[4]}; the SR stage only upscales: feed it the 256p base "
                         "clip, or pick a higher SR resolution")
    check_text(model, text)
    if text.positive.shape[0] < 2:
        raise ValueError("the SR model needs a prompt of at least 2 tokens")
    if opts.cfg and text.negative is None:
        raise ValueError("SR with CFG needs the negative prompt's embedding")
    check_finite(video, "base video latent")
    check_finite(audio, "base audio latent")
