"""Build the CLI's components: real weights from files, or the tiny random stand-ins (`--tiny`).

Real weights: the DiTs through `weights.loading.load_dit`, the T5Gemma stack through
`text.loading.load_text_stack`, video decoding through Turbo-VAED (`decoders.turbo_loading`). Encoding a picture (Wan2.2 VAE) and decoding sound (Stable Audio VAE) are
ComfyUI's job and are not re-implemented here, so real components have no image/audio encoder and
no audio decoder.

Tiny: seeded random DiTs from `testing/tiny_dit.py`, a random T5Gemma folder written by
`testing.tiny_text.write_tiny_text_folder` and read back through the same loader and tokenizer code as a
real folder, and the `tiny_codecs` stand-ins for every codec. The output is noise: this is for
testing the plumbing, never for judging quality.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from ..decoders.turbo_loading import load_turbo_vaed
from ..testing import tiny_codecs
from ..testing.tiny_dit import tiny_dit
from ..testing.tiny_text import write_tiny_text_folder
from ..text.loading import load_text_stack
from ..weights.loading import load_dit
from .runner import ClipComponents, ProgressFn

log = logging.getLogger("HappyHorse")
Device = Union[str, torch.device]
SR_VARIANTS = {"540p": "sr_540p", "1080p": "sr_1080p"}
MODE_VARIANTS = {"distilled": "distill", "base": "base"}
TINY_TEXT_SEED = 0
TINY_DIT_SEED, TINY_SR_SEED = 0, 1


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; otherwise the named device (checked to exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but this torch build sees no CUDA GPU; use --device cpu")
    return device


# -- tiny stand-ins ------------------------------------------------------------------------------
def tiny_text_stack(folder: Union[str, Path], device: Device = "cpu") -> tuple[Any, Any]:
    """Write a tiny random T5Gemma folder (config, safetensors, tokenizer) and load it like a real one."""
    write_tiny_text_folder(folder, seed=TINY_TEXT_SEED)
    return load_text_stack(folder, dtype=torch.float32, device=device)


def _tiny_decode_video(latent: torch.Tensor, progress: Optional[ProgressFn] = None) -> torch.Tensor:
    video = tiny_codecs.decode_video(latent)  # [1, 3, 4(T-1)+1, 16h, 16w] 0..1
    if progress is not None:
        progress(1, 1)
    return video


def tiny_components(mode: str, sr_resolution: Optional[str], device: Device = "cpu") -> ClipComponents:
    """Tiny random DiT (+ tiny SR DiT) and the stand-in codecs; the same every time."""
    dit = tiny_dit(MODE_VARIANTS[mode], seed=TINY_DIT_SEED).to(device)
    sr = tiny_dit(SR_VARIANTS[sr_resolution], seed=TINY_SR_SEED).to(device) if sr_resolution else None
    return ClipComponents(dit=dit, sr_dit=sr, decode_video=_tiny_decode_video,
                          decode_audio=tiny_codecs.decode_audio, encode_image=tiny_codecs.encode_video,
                          encode_audio=tiny_codecs.encode_audio, device=device)


# -- real weights ----------------------------------------------------------------------------------
def real_text_stack(path: Union[str, Path], device: Device) -> tuple[Any, Any]:
    """T5Gemma encoder (bf16) + tokenizer from the google/t5gemma-9b-9b-ul2 folder."""
    return load_text_stack(path, dtype=torch.bfloat16, device=device)


def _turbo_decoder(path: Union[str, Path], device: Device) -> Callable[..., torch.Tensor]:
    vaed = load_turbo_vaed(path, dtype=torch.bfloat16, device=device)

    def decode(latent: torch.Tensor, progress: Optional[ProgressFn] = None) -> torch.Tensor:
        video = vaed.decode(latent, progress, output_device="cpu")  # [1, 3, F, H, W] about -1..1
        return video.mul_(0.5).add_(0.5).clamp_(0.0, 1.0)

    return decode


def real_components(*, dit: Union[str, Path], turbo_vaed: Union[str, Path], mode: str,
                    sr_dit: Optional[Union[str, Path]] = None, sr_resolution: Optional[str] = None,
                    weight_dtype: str = "bf16", device: Device = "cpu") -> ClipComponents:
    """Base DiT now, SR DiT on first use (after the base DiT is released), Turbo-VAED decoder."""
    model = load_dit(dit, variant=MODE_VARIANTS[mode], weight_dtype=weight_dtype, device=device)
    sr_loader = None
    if sr_resolution is not None:
        if sr_dit is None:
            raise ValueError(f"--resolution {sr_resolution} needs the super-resolution DiT: pass --sr-dit")
        variant = SR_VARIANTS[sr_resolution]
        sr_loader = lambda: load_dit(sr_dit, variant=variant, weight_dtype=weight_dtype, device=device)  # noqa: E731
    return ClipComponents(dit=model, sr_dit=sr_loader, decode_video=_turbo_decoder(turbo_vaed, device),
                          device=device, release_between_stages=True)
