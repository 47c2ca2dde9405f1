"""MLP activations, the MLP, and the input adapter of the DiT (MODEL_SPEC §1.2-1.3)."""
from __future__ import annotations

import torch
from torch import nn

from .config import DiTConfig
from .modality import ModalitySplit
from .ops import Ops
from .rope import RopeTable
from .rowwise import gelu7_to, swiglu7_to


class MLP(nn.Module):
    """up_gate_proj -> activation (fp32) -> down_proj; `pre_norm` is applied by the layer."""

    def __init__(self, cfg: DiTConfig, layer: int, ops: Ops) -> None:
        super().__init__()
        experts, shared = cfg.num_experts(layer), cfg.is_shared(layer)
        inner = cfg.mlp_intermediate(layer)
        self.gelu = cfg.is_gelu7(layer)
        self.pre_norm = ops.rms_norm(cfg.hidden_size, experts, cfg.norm_eps)
        up = inner if self.gelu else 2 * inner
        self.up_gate_proj = ops.expert_linear(cfg.hidden_size, up, experts, shared)
        self.down_proj = ops.expert_linear(inner, cfg.hidden_size, experts, shared)

    def forward(self, x: torch.Tensor, split: ModalitySplit, cdt: torch.dtype) -> torch.Tensor:
        """x [L, D] normed input in cdt -> down_proj output [L, D] in cdt (the residual delta)."""
        x = self.up_gate_proj(x, split, cdt)  # [L, inner or 2*inner], cdt
        x = gelu7_to(x, cdt) if self.gelu else swiglu7_to(x, cdt)  # fp32 math -> [L, inner] cdt
        return self.down_proj(x, split, cdt)


class Adapter(nn.Module):
    """Per-modality fp32 embedders (with bias) into the hidden size, and the RoPE table."""

    def __init__(self, cfg: DiTConfig, ops: Ops) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.video_embedder = ops.fp32_linear(cfg.video_in_channels, d, bias=True)
        self.text_embedder = ops.fp32_linear(cfg.text_in_channels, d, bias=True)
        self.audio_embedder = ops.fp32_linear(cfg.audio_in_channels, d, bias=True)
        self.rope = RopeTable(cfg.head_dim, device=ops.device)

    def forward(self, video: torch.Tensor, audio: torch.Tensor, text: torch.Tensor,
                text_hidden: torch.Tensor | None = None) -> torch.Tensor:
        """video [Nv, 192], audio [F, 64], text [n, Dt] -> hidden [Nv + F + n, D] fp32.

        `text_hidden` [n, D], if given, is `embed_text(text)` computed earlier (it is the same at
        every denoising step) and is used instead of running the text embedder again.
        """
        pairs = ((self.video_embedder, video), (self.audio_embedder, audio))
        parts = [emb(x.float()) for emb, x in pairs if x.shape[0] > 0]
        if text.shape[0] > 0:
            parts.append(self.embed_text(text) if text_hidden is None else text_hidden)
        return torch.cat(parts, dim=0)

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        """text [n, Dt] -> [n, D] fp32."""
        return self.text_embedder(text.float())
