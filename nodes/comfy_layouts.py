"""ComfyUI's IMAGE / AUDIO / LATENT values <-> the core's tensors (pure torch: no ComfyUI import).

The node files convert at their edges with these, so the core only ever sees its own layouts, and a
wrongly shaped input fails with a message that says which socket to connect:
  IMAGE  [T, H, W, 3] float 0..1        <-> frames [1, 3, T, H, W] float 0..1
  AUDIO  {"waveform": [1, C, N], "sample_rate": sr} <-> (waveform [C, N], sr)
  LATENT video {"samples": [B, 48, T, h, w]};  audio {"samples": [B, 64, F], "type": "audio"}
"""
from __future__ import annotations

import torch

from ..happyhorse_core.geometry import AUDIO_LATENT_CHANNELS, VIDEO_LATENT_CHANNELS


def image_to_frames(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [T, H, W, 3] (0..1) -> core frames [1, 3, T, H, W] float32 (0..1)."""
    if image.ndim != 4 or image.shape[-1] != 3:
        raise ValueError(f"IMAGE must be [frames, height, width, 3], got {tuple(image.shape)}: "
                         "connect an IMAGE output (RGB; drop alpha with a convert node)")
    return image.float().permute(3, 0, 1, 2).unsqueeze(0).contiguous()


def frames_to_image(frames: torch.Tensor) -> torch.Tensor:
    """Core frames [1, 3, T, H, W] (or [3, T, H, W]) in 0..1 -> IMAGE [T, H, W, 3] float32, clamped."""
    if frames.ndim == 5:
        if frames.shape[0] != 1:
            raise ValueError(f"frames batch must be 1, got {tuple(frames.shape)}")
        frames = frames[0]
    if frames.ndim != 4 or frames.shape[0] != 3:
        raise ValueError(f"frames must be [1, 3, T, H, W], got {tuple(frames.shape)}")
    return frames.float().clamp(0.0, 1.0).permute(1, 2, 3, 0).contiguous()


def audio_to_waveform(audio: dict) -> tuple[torch.Tensor, int]:
    """ComfyUI AUDIO {"waveform": [1, C, N], "sample_rate"} -> (waveform [C, N] float32, sample_rate)."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError("AUDIO must be a dict with 'waveform' and 'sample_rate': connect an AUDIO output")
    wav = audio["waveform"]
    if wav.ndim == 2:
        wav = wav.unsqueeze(0)
    if wav.ndim != 3 or wav.shape[0] != 1:
        raise ValueError(f"AUDIO waveform must be [1, channels, samples], got {tuple(wav.shape)}: "
                         "pass one clip (split batches first)")
    return wav[0].float(), int(audio["sample_rate"])


def waveform_to_audio(waveform: torch.Tensor, sample_rate: int) -> dict:
    """(waveform [C, N], sample_rate) -> ComfyUI AUDIO {"waveform": [1, C, N] float32, "sample_rate"}."""
    if waveform.ndim != 2:
        raise ValueError(f"waveform must be [channels, samples], got {tuple(waveform.shape)}")
    return {"waveform": waveform.float().unsqueeze(0).contiguous(), "sample_rate": int(sample_rate)}


def video_latent(samples: torch.Tensor) -> dict:
    """[B, 48, T, h, w] -> LATENT dict."""
    _check_latent(samples, 5, VIDEO_LATENT_CHANNELS, "video", "[B, 48, T, h, w]")
    return {"samples": samples}


def audio_latent(samples: torch.Tensor) -> dict:
    """[B, 64, F] -> LATENT dict marked "type": "audio" (as core EmptyLatentAudio does)."""
    _check_latent(samples, 3, AUDIO_LATENT_CHANNELS, "audio", "[B, 64, F]")
    return {"samples": samples, "type": "audio"}


def latent_samples(latent: dict, kind: str) -> torch.Tensor:
    """The samples tensor of a video / audio LATENT, shape-checked ([B,48,T,h,w] / [B,64,F])."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError("LATENT must be a dict with 'samples': connect a LATENT output")
    if kind == "video":
        _check_latent(latent["samples"], 5, VIDEO_LATENT_CHANNELS, kind, "[B, 48, T, h, w]")
    elif kind == "audio":
        _check_latent(latent["samples"], 3, AUDIO_LATENT_CHANNELS, kind, "[B, 64, F]")
    else:
        raise ValueError(f"latent kind must be 'video' or 'audio', got {kind!r}")
    return latent["samples"]


def _check_latent(x: torch.Tensor, ndim: int, channels: int, kind: str, want: str) -> None:
    if x.ndim != ndim or x.shape[1] != channels:
        raise ValueError(f"{kind} latent must be {want} (Wan2.2 video / Stable Audio latents), "
                         f"got {tuple(x.shape)}: connect the matching HappyHorse latent")
