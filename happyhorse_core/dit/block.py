"""One transformer layer: gated self-attention + MLP, pre-norm, fp32 residual (MODEL_SPEC §1.3).

The pre-norms live in the attention / MLP modules (reference key names) but are applied by the
layer, fused with the residual adds (dit/rowwise.py); the sub-modules take normed input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .attention import attention
from .local_attention import local_attention
from .config import DiTConfig
from .modality import ModalitySplit
from .ops import Ops
from .layers import MLP
from .rowwise import add_, add_rms_norm_, gate_, qk_norm_rope, rms_norm


@dataclass
class StepContext:
    """Everything a layer needs besides the hidden states; built once per forward."""

    split: ModalitySplit  # token counts per modality
    rope: torch.Tensor  # [L, 6B] fp32 sin|cos table
    compute_dtype: torch.dtype  # bf16 (faithful) or fp32
    backend: str  # resolved attention backend
    tokens_per_frame: int  # video tokens per latent frame (local attention)
    shard: Any = None  # sequence parallel (parallel.SequenceShard): `split`/`rope` are this rank's rows


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

    def forward(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """x [L, D] normed input in the compute dtype -> linear_proj output [L, D] in the compute dtype."""
        cdt, split = ctx.compute_dtype, ctx.split
        qkvg = self.linear_qkv(x, split, cdt)  # [L, (Hq + 2 Hkv) Dh + Hq], q | k | v | gate
        nqk, nv = (self.hq + self.hkv) * self.dh, self.hkv * self.dh
        q, k = qk_norm_rope(qkvg, (self.hq, self.hkv, self.dh), self.q_norm, self.k_norm, ctx.rope, split, cdt)
        v = qkvg[:, nqk:nqk + nv].unflatten(1, (self.hkv, self.dh)).to(cdt)  # [L, Hkv, Dh]
        if ctx.shard is None:
            out = self._attend(q, k, v, ctx)  # [L, Hq, Dh] in cdt
        else:  # all-to-all to whole-sequence head groups, attend, and back to this rank's rows
            out = ctx.shard.attend(q, k, v, lambda *qkv: self._attend(*qkv, ctx))
        if self.gated:
            out = gate_(out, qkvg[:, nqk + nv:nqk + nv + self.hq], cdt)  # [L, Hq * Dh]; later columns: padding
        else:
            out = out.reshape(out.shape[0], -1).to(cdt)
        return self.linear_proj(out, split, cdt)  # [L, D]

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Attention over the WHOLE sequence: q [L, H, Dh], k/v [L, Hk, Dh] -> [L, H, Dh]."""
        split = ctx.split if ctx.shard is None else ctx.shard.full_split
        if self.local and split.video > 0:
            return local_attention(q, k, v, num_video=split.video, tokens_per_frame=ctx.tokens_per_frame,
                                   window=self.window)
        return attention(q, k, v, ctx.backend)


class TransformerLayer(nn.Module):
    def __init__(self, cfg: DiTConfig, layer: int, ops: Ops) -> None:
        super().__init__()
        self.index = layer
        self.attention = Attention(cfg, layer, ops)
        self.mlp = MLP(cfg, layer, ops)

    def forward(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """h [L, D] fp32 residual stream, updated IN PLACE and returned."""
        cdt, split = ctx.compute_dtype, ctx.split
        x = rms_norm(self.attention.pre_norm, h, split, cdt)
        x = add_rms_norm_(h, self.attention(x, ctx), self.mlp.pre_norm, split, cdt)  # h += attn; norm
        return add_(h, self.mlp(x, split, cdt))  # h += mlp
