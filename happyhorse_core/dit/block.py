"""One transformer layer: gated self-attention + MLP, pre-norm, fp32 residual (MODEL_SPEC §1.3)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..attention import attention, local_attention
from ..config import DiTConfig
from ..modality import ModalitySplit
from ..ops import Ops
from ..rope import apply_rope
from .layers import MLP


@dataclass
class StepContext:
    """Everything a layer needs besides the hidden states; built once per forward."""

    split: ModalitySplit  # token counts per modality
    rope: torch.Tensor  # [L, 6B] fp32 sin|cos table
    compute_dtype: torch.dtype  # bf16 (faithful) or fp32
    backend: str  # resolved attention backend
    tokens_per_frame: int  # video tokens per latent frame (local attention)


class Attention(nn.Module):
    def __init__(self, cfg: DiTConfig, layer: int, ops: Ops) -> None:
        super().__init__()
        experts, shared = cfg.num_experts(layer), cfg.is_shared(layer)
        self.hq, self.hkv, self.dh = cfg.num_heads_q, cfg.num_heads_kv, cfg.head_dim
        self.gated = cfg.enable_attn_gating
        self.local = layer in cfg.local_attn_layers
        self.window = cfg.frame_receptive_field
        self.pre_norm = ops.rms_norm(cfg.hidden_size, experts, cfg.norm_eps)
        self.linear_qkv = ops.expert_linear(cfg.hidden_size, cfg.qkv_out, experts, shared)
        self.q_norm = ops.rms_norm(cfg.head_dim, experts, cfg.norm_eps)
        self.k_norm = ops.rms_norm(cfg.head_dim, experts, cfg.norm_eps)
        self.linear_proj = ops.expert_linear(cfg.hidden_size, cfg.hidden_size, experts, shared)

    def forward(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        L, cdt, split = h.shape[0], ctx.compute_dtype, ctx.split
        x = self.pre_norm(h, split).to(cdt)  # [L, D]
        qkvg = self.linear_qkv(x, split, cdt).float()  # [L, (Hq + 2 Hkv) Dh + Hq]
        nq, nkv = self.hq * self.dh, self.hkv * self.dh
        q = qkvg[:, :nq].view(L, self.hq, self.dh)
        k = qkvg[:, nq:nq + nkv].view(L, self.hkv, self.dh)
        v = qkvg[:, nq + nkv:nq + 2 * nkv].view(L, self.hkv, self.dh)
        q = apply_rope(self.q_norm(q, split), ctx.rope).to(cdt)  # [L, Hq, Dh]
        k = apply_rope(self.k_norm(k, split), ctx.rope).to(cdt)  # [L, Hkv, Dh]
        v = v.to(cdt)
        if self.local and split.video > 0:
            out = local_attention(q, k, v, num_video=split.video, tokens_per_frame=ctx.tokens_per_frame,
                                  window=self.window, backend=ctx.backend)
        else:
            out = attention(q, k, v, ctx.backend)  # [L, Hq, Dh] in cdt
        if self.gated:
            gate = qkvg[:, nq + 2 * nkv:].unsqueeze(-1)  # [L, Hq, 1] fp32
            out = out * torch.sigmoid(gate)  # promotes to fp32
        out = out.reshape(L, self.hq * self.dh).to(cdt)
        return self.linear_proj(out, split, cdt).float()  # [L, D]


class TransformerLayer(nn.Module):
    def __init__(self, cfg: DiTConfig, layer: int, ops: Ops) -> None:
        super().__init__()
        self.index = layer
        self.attention = Attention(cfg, layer, ops)
        self.mlp = MLP(cfg, layer, ops)

    def forward(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        h = h + self.attention(h, ctx)
        return h + self.mlp(h, ctx.split, ctx.compute_dtype)
