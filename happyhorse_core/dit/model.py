"""SandwichDiT: adapter -> 40 transformer layers -> per-modality output heads (MODEL_SPEC §1.2).

The module tree mirrors the reference so that `state_dict()` keys are the published ones:
`adapter.*`, `block.layers.{i}.*`, `final_norm_{video,audio}`, `final_linear_{video,audio}`.
There is no timestep input: the noise level is read from the latents themselves.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from ..attention import resolve_backend
from ..config import DiTConfig
from ..modality import ModalitySplit
from ..ops import Ops
from .block import StepContext, TransformerLayer
from .layers import Adapter


class _Blocks(nn.Module):
    """Holds `layers` so keys read `block.layers.{i}` like the reference."""

    def __init__(self, cfg: DiTConfig, ops: Ops) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(cfg, i, ops) for i in range(cfg.num_layers))


class SandwichDiT(nn.Module):
    def __init__(self, cfg: DiTConfig, ops: Ops | None = None, attn_backend: str = "sdpa") -> None:
        super().__init__()
        ops = ops or Ops()
        self.config, self.ops = cfg, ops
        self.compute_dtype = ops.compute_dtype
        self.attn_backend = attn_backend
        self.adapter = Adapter(cfg, ops)
        self.block = _Blocks(cfg, ops)
        d = cfg.hidden_size
        self.final_norm_video = ops.rms_norm(d, 1, cfg.norm_eps)
        self.final_norm_audio = ops.rms_norm(d, 1, cfg.norm_eps)
        self.final_linear_video = ops.fp32_linear(d, cfg.video_in_channels, bias=False)
        self.final_linear_audio = ops.fp32_linear(d, cfg.audio_in_channels, bias=False)

    @property
    def layers(self) -> nn.ModuleList:
        return self.block.layers

    def forward(self, video: torch.Tensor, audio: torch.Tensor, text: torch.Tensor, coords: torch.Tensor,
                tokens_per_frame: int, capture: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One denoiser call.

        video [Nv, 192] patchified latent tokens, audio [F, 64], text [n, Dt], coords [Nv+F+n, 9].
        Returns the velocity tokens: video [Nv, 192] and audio [F, 64], fp32.
        `capture`, if given, receives the residual stream after every layer (parity checks).
        """
        split = ModalitySplit(video.shape[0], audio.shape[0], text.shape[0])
        if coords.shape[0] != split.total:
            raise ValueError(f"coords has {coords.shape[0]} rows but the sequence has {split.total} tokens")
        h = self.adapter(video, audio, text)  # [L, D] fp32
        ctx = StepContext(split=split, rope=self.adapter.rope(coords.to(h.device)),
                          compute_dtype=self.compute_dtype,
                          backend=resolve_backend(self.attn_backend, h.device),
                          tokens_per_frame=max(tokens_per_frame, 1))
        for layer in self.block.layers:
            h = layer(h, ctx)
            if capture is not None:
                capture.append(h.clone())  # layers update h in place
        hv, ha = h[split.slice(0)], h[split.slice(1)]
        video_out = self.final_linear_video(self.final_norm_video(hv))  # [Nv, 192]
        audio_out = self.final_linear_audio(self.final_norm_audio(ha))  # [F, 64]
        return video_out, audio_out

    # -- memory ----------------------------------------------------------------------------
    def device_bytes(self) -> dict[str, int]:
        """Bytes of parameters and buffers per device, e.g. {"cpu": ..., "cuda:0": ...}."""
        out: dict[str, int] = defaultdict(int)
        for t in list(self.parameters()) + list(self.buffers()):
            out[str(t.device)] += t.numel() * t.element_size()
        return dict(out)
