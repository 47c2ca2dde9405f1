"""Turbo-VAED: the distilled fast decoder for Wan2.2 48-channel video latents, with the
reference's overlapping sliding-window decode (MODEL_SPEC §7.2, golden README §7).

Why windows: the decoder's convs are non-causal, so each window of latent frames is decoded with one
extra latent frame of context on each attached side; the 4 pixel frames produced from that context
are dropped. The window layout is not a free choice: it changes the pixels (a single call over 15
frames differs from the windowed result by up to 2.6), so it is reproduced exactly here.
Host hooks (progress, interrupt) are plain callables; nothing here knows about ComfyUI.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ..errors import CheckpointError
from .turbo_blocks import TurboDecoder3d
from .turbo_config import WAN22_LATENT_MEAN, WAN22_LATENT_STD, TurboVAEDConfig

ProgressFn = Callable[[int, int], None]  # progress(windows_done, windows_total)
InterruptFn = Callable[[], None]  # raises to abort; called before every window


@dataclass(frozen=True)
class DecodeWindow:
    """One decoder call over latent frames [start, stop) of the padded latent."""

    start: int
    stop: int
    is_first_chunk: bool  # first window: each time upsampler drops its first output frame
    drop_front: int  # pixel frames cut from the start of this window's output (left context)
    drop_back: int  # pixel frames cut from the end (right context)


def plan_windows(
    num_frames: int, first_chunk_size: int = 7, step_size: int = 7, overlap: int = 4
) -> tuple[int, list[DecodeWindow]]:
    """Padding (latent frames appended) and the decoder windows for `num_frames` latent frames.

    The latent is padded with copies of its last frame to first_chunk_size + k*step_size frames.
    Window 0 covers [0, first+1) (one frame of right context); window i covers [i-1, i+step+1),
    the last one [i-1, i+step). Each context frame yields `overlap` pixel frames that are dropped.
    """
    if num_frames < 1:
        raise ValueError(f"the latent needs at least 1 frame, got {num_frames}")
    pad = 0
    if num_frames < first_chunk_size:
        pad = first_chunk_size - num_frames
    elif (num_frames - first_chunk_size) % step_size:
        pad = step_size - (num_frames - first_chunk_size) % step_size
    total = num_frames + pad
    if total == first_chunk_size:
        return pad, [DecodeWindow(0, total, True, 0, 0)]
    windows = [DecodeWindow(0, first_chunk_size + 1, True, 0, overlap)]
    for i in range(first_chunk_size, total, step_size):
        last = i + step_size == total
        stop = i + step_size if last else i + step_size + 1
        windows.append(DecodeWindow(i - 1, stop, False, overlap, 0 if last else overlap))
    return pad, windows


class TurboVAED(nn.Module):
    """Decoder-only Turbo-VAED; state_dict keys are `decoder.*` as in the released checkpoint."""

    def __init__(self, config: Optional[TurboVAEDConfig] = None) -> None:
        super().__init__()
        self.config = config if config is not None else TurboVAEDConfig()
        self.source = "the Turbo-VAED weights file"  # loaders set the file path (used in messages)
        self.decoder = TurboDecoder3d(self.config)

    def output_frames(self, latent_frames: int) -> int:
        """Pixel frames produced for `latent_frames` latent frames: 4(T-1)+1."""
        return self.config.temporal_compression_ratio * (latent_frames - 1) + 1

    def denormalize(self, latent: torch.Tensor) -> torch.Tensor:
        """z*std + mean per channel, computed in fp32 as the reference does (z / (1/std) + mean)."""
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(WAN22_LATENT_MEAN, dtype=torch.float32, device=latent.device).view(shape)
        inv_std = 1.0 / torch.tensor(WAN22_LATENT_STD, dtype=torch.float32, device=latent.device).view(shape)
        return (latent / inv_std + mean).to(latent.dtype)

    def _prepare(self, latent: torch.Tensor, device: Optional[torch.device | str] = None) -> torch.Tensor:
        """Check the shape, move to `device` (default: the weights' device) in the weights' dtype,
        de-normalise. [B, 48, T, h, w]."""
        c = self.config.latent_channels
        if latent.dim() != 5 or latent.shape[1] != c or latent.shape[2] < 1:
            raise ValueError(
                f"Turbo-VAED expects a normalised Wan2.2 video latent [B, {c}, T>=1, h, w], got {tuple(latent.shape)}"
            )
        if not latent.is_floating_point():
            raise ValueError(f"the latent must be a floating-point tensor, got {latent.dtype}")
        if not bool(torch.isfinite(latent).all()):
            raise ValueError("the video latent contains NaN/Inf values; check the node that produced it")
        weight = self.decoder.conv_in.conv.weight
        return self.denormalize(latent.to(device=weight.device if device is None else device, dtype=weight.dtype))

    @torch.no_grad()
    def decode(
        self,
        latent: torch.Tensor,
        progress: Optional[ProgressFn] = None,
        interrupt: Optional[InterruptFn] = None,
        *,
        output_device: Optional[torch.device | str] = None,
        device: Optional[torch.device | str] = None,
    ) -> torch.Tensor:
        """Normalised latent [B, 48, T, h, w] -> video [B, 3, 4(T-1)+1, 16h, 16w] in about [-1, 1].

        The latent is cast to the weights' dtype first (the pipeline decodes in bf16). Each finished
        window goes to `output_device` (e.g. "cpu") when given, so only one window's pixels live on
        the compute device; the result is then on `output_device`. `device` is where to compute
        (default: where the weights are); weights elsewhere are fetched per conv when an adapter set a
        fetcher (partial loading, happyhorse_core/fetch.py).
        """
        z = self._prepare(latent, device)  # [B, 48, T, h, w], de-normalised
        cfg = self.config
        overlap = cfg.temporal_compression_ratio  # one latent frame of context = 4 pixel frames
        pad, windows = plan_windows(z.shape[2], cfg.first_chunk_size, cfg.step_size, overlap)
        if pad:
            z = torch.cat([z, z[:, :, -1:].expand(-1, -1, pad, -1, -1)], dim=2)
        pieces: list[torch.Tensor] = []
        try:
            for done, win in enumerate(windows):
                if interrupt is not None:
                    interrupt()
                out = self.decoder(z[:, :, win.start : win.stop], win.is_first_chunk)  # [B, 3, F, H, W]
                if not bool(torch.isfinite(out).all()):  # never a "successful" black video
                    raise CheckpointError(f"Turbo-VAED produced NaN/Inf pixels from a finite latent (window {done + 1} of "
                                     f"{len(windows)}): the weights in {self.source} are damaged or overflow "
                                     "their dtype; download or convert the Turbo-VAED file again")
                out = out[:, :, win.drop_front : out.shape[2] - win.drop_back]
                if output_device is not None:
                    out = out.to(output_device)
                pieces.append(out)
                del out
                if progress is not None:
                    progress(done + 1, len(windows))
        except BaseException:
            # Cancel / OOM: drop the finished windows now. The exception's traceback keeps this frame (and
            # so its locals) alive for as long as the host holds the exception; no partial video survives.
            pieces.clear()
            del z
            raise
        video = torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0]
        del pieces
        if pad:
            video = video[:, :, : video.shape[2] - pad * overlap]
        return video

    @torch.no_grad()
    def decode_one_shot(self, latent: torch.Tensor) -> torch.Tensor:
        """All frames in one decoder call (first-chunk mode, no padding): [B, 3, 4(T-1)+1, 16h, 16w].

        Equals `decode` when T == first_chunk_size; for other T it is NOT the reference output
        (the windowing changes the pixels). Useful as a memory-hungry cross-check only.
        """
        return self.decoder(self._prepare(latent), True)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decode(latent)
