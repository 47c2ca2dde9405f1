"""Packing latents and text into the one token sequence the DiT reads (MODEL_SPEC §2).

Order is [video | audio | text]. Video latents [1, 48, T, h, w] are cut into 2x2 patches with
the channel-MAJOR layout (index c*4 + ph*2 + pw), but the DiT's video output is unpacked with
the channel-MINOR layout (index (ph*2 + pw)*48 + c). Both are what the trained weights expect.

Coordinates [L, 9] = (t, h, w, T, H, W, refT, refH, refW) come in two styles: "v2" for the
base/distill DiT, "v1" for the SR DiTs (they differ only for audio ref and text).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from ..geometry import VIDEO_LATENT_CHANNELS
from .config import PATCH
from .modality import ModalitySplit


def patchify(latent: torch.Tensor) -> torch.Tensor:
    """[1, C, T, h, w] -> tokens [T*(h/2)*(w/2), C*4], channel index c*4 + ph*2 + pw."""
    _check_video(latent)
    return rearrange(latent[0], "c t (h ph) (w pw) -> (t h w) (c ph pw)", ph=PATCH, pw=PATCH)


def unpatchify_output(tokens: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
    """Velocity tokens [Nv, 4*C] -> [1, C, T, h, w], channel index (ph*2 + pw)*C + c."""
    return rearrange(tokens, "(t h w) (ph pw c) -> 1 c t (h ph) (w pw)", t=frames, h=h // PATCH, w=w // PATCH,
                     ph=PATCH, pw=PATCH)


def _check_video(latent: torch.Tensor) -> None:
    if latent.ndim != 5 or latent.shape[0] != 1:
        raise ValueError(f"video latent must be [1, C, T, h, w], got {list(latent.shape)}")
    if latent.shape[3] % PATCH or latent.shape[4] % PATCH:
        raise ValueError(f"video latent height/width must be even (2x2 patches), got {list(latent.shape[3:])}; "
                         "pixel sizes must be multiples of 32")


def _grid(t: int, h: int, w: int) -> torch.Tensor:
    """[t*h*w, 3] integer (t, y, x) positions, row-major."""
    tt, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([tt, yy, xx], dim=-1).reshape(-1, 3).float()


def _rows(pos: torch.Tensor, size: tuple[int, int, int], ref: tuple[int, int, int]) -> torch.Tensor:
    n = pos.shape[0]
    meta = torch.tensor([*size, *ref], dtype=torch.float32).expand(n, 6)
    return torch.cat([pos, meta], dim=1)


def build_coords(frames: int, hp: int, wp: int, audio: int, text: int, style: str = "v2") -> torch.Tensor:
    """coords [Nv + F + n, 9] for a video grid (frames, hp, wp) in tokens, F audio and n text tokens."""
    if style not in ("v1", "v2"):
        raise ValueError(f"coords style must be 'v1' or 'v2', got {style!r}")
    parts = []
    if frames * hp * wp:
        parts.append(_rows(_grid(frames, hp, wp), (frames, hp, wp), (frames, hp, wp)))
    if audio:
        pos = torch.zeros(audio, 3)
        pos[:, 0] = torch.arange(audio)
        ref_t = (audio - 1) // 4 + 1 if style == "v2" else frames
        parts.append(_rows(pos, (audio, 1, 1), (ref_t, 1, 1)))
    if text:
        pos = torch.zeros(text, 3)
        if style == "v2":
            pos[:, 0] = torch.arange(text) - text
            parts.append(_rows(pos, (text, 1, 1), (1, 1, 1)))
        else:
            if text < 2:
                raise ValueError("the super-resolution model needs at least 2 text tokens; use a longer prompt")
            pos[:, 0] = torch.arange(text)
            parts.append(_rows(pos, (text, 1, 1), (2, 1, 1)))
    return torch.cat(parts, dim=0) if parts else torch.zeros(0, 9)


@dataclass
class PackedSequence:
    """The DiT input for one sample: per-modality tokens plus coordinates."""

    video: torch.Tensor  # [Nv, 192]
    audio: torch.Tensor  # [F, 64]
    text: torch.Tensor  # [n, Dt]
    coords: torch.Tensor  # [L, 9]
    grid: tuple[int, int, int]  # latent (T, h, w) of the video, before patching

    @property
    def split(self) -> ModalitySplit:
        return ModalitySplit(self.video.shape[0], self.audio.shape[0], self.text.shape[0])

    @property
    def tokens_per_frame(self) -> int:
        return (self.grid[1] // PATCH) * (self.grid[2] // PATCH)

    def padded(self) -> torch.Tensor:
        """[L, max channels] zero-padded rows, the reference's packed `x` (parity checks)."""
        width = max(self.video.shape[1], self.audio.shape[1], self.text.shape[1])
        pad = [torch.nn.functional.pad(x.float(), (0, width - x.shape[1])) for x in (self.video, self.audio, self.text)]
        return torch.cat(pad, dim=0)

    def modality_ids(self) -> torch.Tensor:
        return self.split.modality_ids()


def pack(video_latent: torch.Tensor, audio_latent: torch.Tensor, text_feat: torch.Tensor,
         style: str = "v2") -> PackedSequence:
    """video_latent [1, 48, T, h, w], audio_latent [1, F, 64] (or [F, 64]), text_feat [n, Dt]."""
    _check_video(video_latent)
    if video_latent.shape[1] != VIDEO_LATENT_CHANNELS:
        raise ValueError(f"video latent must have {VIDEO_LATENT_CHANNELS} channels, got {video_latent.shape[1]}")
    audio = audio_latent[0] if audio_latent.ndim == 3 else audio_latent
    if audio.ndim != 2:
        raise ValueError(f"audio latent must be [1, F, 64], got {list(audio_latent.shape)}")
    if text_feat.ndim != 2:
        raise ValueError(f"text features must be [n, D], got {list(text_feat.shape)}")
    _, _, t, h, w = video_latent.shape
    coords = build_coords(t, h // PATCH, w // PATCH, audio.shape[0], text_feat.shape[0], style)
    return PackedSequence(patchify(video_latent.float()), audio.float(), text_feat.float(), coords, (t, h, w))


def unpack(video_tokens: torch.Tensor, audio_tokens: torch.Tensor,
           seq: PackedSequence) -> tuple[torch.Tensor, torch.Tensor]:
    """DiT output tokens -> (video velocity [1, 48, T, h, w], audio velocity [1, F, 64])."""
    t, h, w = seq.grid
    return unpatchify_output(video_tokens, t, h, w), audio_tokens.unsqueeze(0)


def output_rows(video_tokens: torch.Tensor, audio_tokens: torch.Tensor, text_tokens: int) -> torch.Tensor:
    """The reference's raw `x_out` [L, 192]: audio in columns [:64], text rows zero."""
    width = video_tokens.shape[1]
    audio = torch.nn.functional.pad(audio_tokens, (0, width - audio_tokens.shape[1]))
    zeros = video_tokens.new_zeros(text_tokens, width)
    return torch.cat([video_tokens, audio, zeros], dim=0)
