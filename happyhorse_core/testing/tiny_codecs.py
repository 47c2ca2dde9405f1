"""Tiny stand-in codecs with the real latent geometry, for the CLI ``--tiny`` mode and tests.

These are NOT the Wan2.2 video VAE or the Stable Audio Open VAE, and they produce no
meaningful pictures or sound. They only reproduce the shapes and rates of the real codecs
(MODEL_SPEC §5, §7.1, §7.3) so that the pipeline, muxing and ComfyUI glue can be exercised
without weights:

* video: latent [B, 48, T, h, w] <-> frames [B, 3, 4(T-1)+1, 16h, 16w], float 0..1.
  Each latent vector is mapped to a 16×16 RGB patch by a fixed seeded random linear map;
  frames between latent frames are linear interpolations (latent frame k is pixel frame 4k).
* audio: latent [1, F, 64] <-> waveform [2, 2048·F] at the nominal 51 200 Hz.
  Each latent frame is mapped to 2048 stereo samples by a fixed seeded random linear map.

Encoding is the exact pseudo-inverse of decoding (up to clamping of the pixel range), so
``encode(decode(z)) ≈ z`` for small latents.
"""
from __future__ import annotations

import torch
from einops import rearrange

from ..geometry import AUDIO_HOP, AUDIO_LATENT_CHANNELS, VAE_STRIDE_HW, VAE_STRIDE_T, VIDEO_LATENT_CHANNELS

VIDEO_SEED, AUDIO_SEED = 0x5EED_0001, 0x5EED_0002
_PATCH_VALUES = 3 * VAE_STRIDE_HW * VAE_STRIDE_HW  # 768 pixel values per latent vector
_AUDIO_VALUES = 2 * AUDIO_HOP  # 4096 stereo samples per audio latent frame


def _seeded_map(rows: int, cols: int, seed: int, out_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random [rows, cols] map whose outputs have std ``out_std`` for N(0,1) inputs,
    and its pseudo-inverse [cols, rows]."""
    gen = torch.Generator().manual_seed(seed)
    mat = torch.randn(rows, cols, generator=gen, dtype=torch.float64) * (out_std / rows**0.5)
    pinv = torch.linalg.solve(mat @ mat.T, mat).T  # full row rank: pinv = Mᵀ(MMᵀ)⁻¹, [cols, rows]
    return mat.float(), pinv.float()


class TinyVideoCodec:
    """Stand-in for the Wan2.2 VAE: latent [B,48,T,h,w] <-> frames [B,3,4(T-1)+1,16h,16w] in 0..1."""

    def __init__(self, seed: int = VIDEO_SEED) -> None:
        self.to_pixels, self.to_latent = _seeded_map(VIDEO_LATENT_CHANNELS, _PATCH_VALUES, seed, out_std=0.5)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.dim() != 5 or latent.shape[1] != VIDEO_LATENT_CHANNELS:
            raise ValueError(f"video latent must be [B, 48, T, h, w], got shape {tuple(latent.shape)}")
        z = rearrange(latent.float(), "b c t h w -> b t h w c")
        patches = z @ self.to_pixels.to(z.device)  # [B, T, h, w, 768]
        keys = rearrange(patches, "b t h w (c p q) -> b c t (h p) (w q)", p=VAE_STRIDE_HW, q=VAE_STRIDE_HW)
        keys = keys.mul(0.5).add_(0.5)  # pixel frames 0, 4, 8, ... in 0..1 units
        b, c, t, hh, ww = keys.shape
        out = keys.new_empty(b, c, VAE_STRIDE_T * (t - 1) + 1, hh, ww)
        out[:, :, ::VAE_STRIDE_T] = keys
        for r in range(1, VAE_STRIDE_T):  # in-between frames: linear interpolation
            torch.lerp(keys[:, :, :-1], keys[:, :, 1:], r / VAE_STRIDE_T, out=out[:, :, r::VAE_STRIDE_T])
        return out.clamp_(0.0, 1.0)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() != 5 or frames.shape[1] != 3:
            raise ValueError(f"frames must be [B, 3, F, H, W], got shape {tuple(frames.shape)}")
        _, _, f, h, w = frames.shape
        if (f - 1) % VAE_STRIDE_T:
            raise ValueError(f"frame count must be 4k+1 (1, 5, 9, ...), got {f}")
        if h % VAE_STRIDE_HW or w % VAE_STRIDE_HW:
            raise ValueError(f"frame size must be a multiple of 16, got {w}x{h}")
        keys = frames[:, :, ::VAE_STRIDE_T].float() * 2.0 - 1.0  # [B, 3, T, H, W]
        patches = rearrange(keys, "b c t (h p) (w q) -> b t h w (c p q)", p=VAE_STRIDE_HW, q=VAE_STRIDE_HW)
        z = patches @ self.to_latent.to(patches.device)  # [B, T, h, w, 48]
        return rearrange(z, "b t h w c -> b c t h w").contiguous()


class TinyAudioCodec:
    """Stand-in for the Stable Audio VAE: latent [1,F,64] <-> waveform [2, 2048·F] (nominal 51.2 kHz)."""

    def __init__(self, seed: int = AUDIO_SEED) -> None:
        self.to_wave, self.to_latent = _seeded_map(AUDIO_LATENT_CHANNELS, _AUDIO_VALUES, seed, out_std=0.1)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.dim() != 3 or latent.shape[0] != 1 or latent.shape[2] != AUDIO_LATENT_CHANNELS:
            raise ValueError(f"audio latent must be [1, F, 64], got shape {tuple(latent.shape)}")
        frames = latent[0].float() @ self.to_wave.to(latent.device)  # [F, 4096]
        return rearrange(frames, "f (c n) -> c (f n)", c=2)  # [2, 2048·F]

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() == 3 and waveform.shape[0] == 1:
            waveform = waveform[0]
        if waveform.dim() != 2 or waveform.shape[0] != 2 or waveform.shape[1] == 0:
            raise ValueError(f"waveform must be stereo [2, N] or [1, 2, N], got shape {tuple(waveform.shape)}")
        pad = -waveform.shape[1] % AUDIO_HOP  # a partial last hop is zero-padded
        wav = torch.nn.functional.pad(waveform.float(), (0, pad))
        frames = rearrange(wav, "c (f n) -> f (c n)", n=AUDIO_HOP)  # [F, 4096]
        return (frames @ self.to_latent.to(wav.device))[None]  # [1, F, 64]


_default_video: TinyVideoCodec | None = None
_default_audio: TinyAudioCodec | None = None


def _video() -> TinyVideoCodec:
    global _default_video
    if _default_video is None:
        _default_video = TinyVideoCodec()
    return _default_video


def _audio() -> TinyAudioCodec:
    global _default_audio
    if _default_audio is None:
        _default_audio = TinyAudioCodec()
    return _default_audio


def decode_video(latent: torch.Tensor) -> torch.Tensor:
    """Stand-in decode: [B,48,T,h,w] -> frames [B,3,4(T-1)+1,16h,16w] float 0..1."""
    return _video().decode(latent)


def encode_video(frames: torch.Tensor) -> torch.Tensor:
    """Stand-in encode: frames [B,3,4k+1,H,W] in 0..1 -> latent [B,48,k+1,H/16,W/16]."""
    return _video().encode(frames)


def decode_audio(latent: torch.Tensor) -> torch.Tensor:
    """Stand-in decode: [1,F,64] -> waveform [2, 2048·F] at the nominal 51 200 Hz."""
    return _audio().decode(latent)


def encode_audio(waveform: torch.Tensor) -> torch.Tensor:
    """Stand-in encode: waveform [2,N] or [1,2,N] -> latent [1, ceil(N/2048), 64]."""
    return _audio().encode(waveform)
