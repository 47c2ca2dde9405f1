"""Read a user's reference image and voice track with PyAV, and fit the image to the clip size.

The CLI's stand-in (`--tiny`) path needs pixels and samples without ComfyUI's loaders; PyAV (FFmpeg)
is already a dependency for muxing, so PIL/soundfile are not needed. Image preprocessing follows the
reference (MODEL_SPEC §7.1): center-crop to the target aspect ratio, then resize to exactly W×H
(antialiased bicubic here, Lanczos in the reference's PIL path) and keep values in 0..1; the video
encoder maps them to [-1, 1].
"""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from .shrink import shrink_early


def _open(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    return path


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode the first picture of a PNG/JPEG/WebP/... file -> uint8 [3, H, W] (RGB)."""
    path = _open(path, "image")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} holds no picture; pass a PNG or JPEG image")
            frame = next(container.decode(video=0), None)
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot read {path} as an image ({exc}); pass a PNG or JPEG file") from None
    if frame is None:
        raise ValueError(f"{path} holds no decodable picture; pass a PNG or JPEG image")
    rgb = frame.to_ndarray(format="rgb24")  # [H, W, 3] uint8
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()


def center_crop_to_aspect(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[C, H, W] -> the largest centered crop with aspect width:height (no resize)."""
    _, h, w = image.shape
    if w * height > h * width:  # too wide: cut the sides
        new_w = max(1, round(h * width / height))
        left = (w - new_w) // 2
        return image[:, :, left:left + new_w]
    new_h = max(1, round(w * height / width))
    top = (h - new_h) // 2
    return image[:, top:top + new_h, :]


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """uint8 (or 0..1 float) [3, H, W] -> one video frame [1, 3, 1, height, width] float 0..1."""
    if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[1:]) < 1:
        raise ValueError(f"image must be [3, H, W] RGB, got shape {tuple(image.shape)}")
    x = center_crop_to_aspect(image, width, height)  # a view: nothing copied yet
    x = shrink_early(x, width, height, divide=255.0 if image.dtype == torch.uint8 else 1.0)  # float, < 4x target
    if tuple(x.shape[1:]) != (height, width):
        x = F.interpolate(x[None], size=(height, width), mode="bicubic", antialias=True, align_corners=False)[0]
    return x.clamp(0.0, 1.0)[None, :, None].contiguous()  # [1, 3, 1, H, W]


def read_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Decode the first audio stream of any FFmpeg-readable file -> (float32 [C, N] in -1..1, rate)."""
    path = _open(path, "audio")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path} has no audio stream; pass a WAV/FLAC/MP3/M4A file with sound")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
            chunks = []
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))  # [C, n] each
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot decode audio from {path} ({exc})") from None
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise ValueError(f"{path} contains no audio samples")
    wave = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)  # [C, N]
    return torch.from_numpy(np.ascontiguousarray(wave)), int(rate)
