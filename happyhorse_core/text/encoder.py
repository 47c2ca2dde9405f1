"""Our own T5Gemma encoder (google/t5gemma-9b-9b-ul2, encoder half only), in plain torch.

The pipeline conditions the DiT on the encoder's `last_hidden_state` (MODEL_SPEC §6.1). This module
reproduces transformers 4.56.0's `T5GemmaEncoderModel` math op for op (Gemma-2 style layers: RMSNorm
with (1 + w) computed in fp32, embedding scaled by sqrt(hidden) rounded to the weight dtype, RoPE,
GQA, bidirectional attention that alternates a sliding window with full attention, sandwich norms
around attention and the gated GELU-tanh MLP), so an HF state dict loads with no renaming: the keys
of `T5GemmaEncoder.state_dict()` are the HF encoder keys without the `model.encoder.` prefix.

Softcap note: the HF config says `attn_logit_softcapping = 50`, but the reference loads the encoder
with transformers' default attention (SDPA), and HF's SDPA path silently drops the softcap. The
features the DiT was conditioned on were therefore computed WITHOUT it; `apply_attn_softcap=False`
(the default) reproduces that, `True` reproduces HF's "eager" attention.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..fetch import Embedding, Linear, WeightHost

SLIDING, FULL = "sliding_attention", "full_attention"
_ACTIVATIONS = {"gelu_pytorch_tanh": "tanh", "gelu": "none"}  # HF name -> F.gelu approximate=
MAX_TEXT_TOKENS = 640  # t5_gemma_target_length in every reference config


@dataclass(frozen=True)
class T5GemmaEncoderConfig:
    """Encoder hyper-parameters; field names follow the HF `encoder` sub-config."""

    vocab_size: int = 256000
    hidden_size: int = 3584  # text feature width that reaches the DiT
    intermediate_size: int = 14336  # gated MLP width
    num_hidden_layers: int = 42
    num_attention_heads: int = 16
    num_key_value_heads: int = 8  # GQA: 2 query heads per kv head
    head_dim: int = 256
    hidden_activation: str = "gelu_pytorch_tanh"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    query_pre_attn_scalar: float = 256.0  # attention scale = query_pre_attn_scalar ** -0.5
    sliding_window: int = 4096  # sliding layers see keys with |q - k| < sliding_window
    layer_types: tuple[str, ...] = field(default=())  # empty -> sliding, full, sliding, ...
    attn_logit_softcapping: float | None = 50.0  # tanh cap on attention logits (HF eager only)
    apply_attn_softcap: bool = False  # False = what the reference computed (HF SDPA path)
    attention_bias: bool = False

    def __post_init__(self) -> None:
        if not self.layer_types:
            types = tuple(SLIDING if i % 2 == 0 else FULL for i in range(self.num_hidden_layers))
            object.__setattr__(self, "layer_types", types)
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries but num_hidden_layers is "
                             f"{self.num_hidden_layers}; fix the encoder section of config.json")
        bad = sorted({t for t in self.layer_types if t not in (SLIDING, FULL)})
        if bad:
            raise ValueError(f"unknown layer_types {bad}; expected {SLIDING!r} or {FULL!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"{self.num_attention_heads} attention heads cannot be grouped over "
                             f"{self.num_key_value_heads} key/value heads")
        if self.hidden_activation not in _ACTIVATIONS:
            raise ValueError(f"hidden_activation {self.hidden_activation!r} is not supported; "
                             f"expected one of {sorted(_ACTIVATIONS)}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")

    @property
    def softcap(self) -> float | None:
        """The cap actually applied in attention, or None."""
        return self.attn_logit_softcapping if self.apply_attn_softcap else None

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], **overrides: Any) -> "T5GemmaEncoderConfig":
        """Read the `encoder` sub-config of an HF T5Gemma `config.json` (or a bare `t5_gemma_module` one)."""
        bare = config.get("model_type") == "t5_gemma_module"
        enc = config if bare else config.get("encoder")
        if not isinstance(enc, dict) or "hidden_size" not in enc:
            raise ValueError("config.json has no T5Gemma encoder section (expected an 'encoder' object with "
                             "'hidden_size'); use the config.json of google/t5gemma-9b-9b-ul2")
        rope_scaling = enc.get("rope_scaling")
        if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type")) != "default":
            raise ValueError(f"rope_scaling {rope_scaling} is not supported (T5Gemma uses plain RoPE)")
        # HF shares vocab_size from the top level into the sub-configs, so the top level wins.
        vocab = config.get("vocab_size", enc.get("vocab_size", cls.vocab_size))
        names = {f.name for f in dataclasses.fields(cls)} - {"vocab_size", "layer_types", "apply_attn_softcap"}
        kwargs: dict[str, Any] = {k: enc[k] for k in names if k in enc}
        kwargs["layer_types"] = tuple(enc.get("layer_types") or ())
        kwargs["vocab_size"] = vocab
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf_encoder_dict(self) -> dict[str, Any]:
        """The `encoder` sub-config in HF spelling (used to write HF-compatible folders)."""
        d = dataclasses.asdict(self)
        d.pop("apply_attn_softcap")
        d["layer_types"] = list(self.layer_types)
        d.update(model_type="t5_gemma_module", max_position_embeddings=8192, dropout_rate=0.0,
                 attention_dropout=0.0, final_logit_softcapping=30.0, initializer_range=0.02)
        return d


class GemmaRMSNorm(nn.Module, WeightHost):
    """RMSNorm whose weight is an offset: y = x / rms(x) * (1 + w), computed in fp32.

    The weight is read through the fetch step (happyhorse_core/fetch.py)."""

    bias = None  # weight only (read by weight fetchers)

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        f = self.fetch(x.device)
        out = (xf * (1.0 + f.weight.float())).type_as(x)
        self.release(f)
        return out


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [n, head_dim] (fp32 math, cast to dtype), halves duplicated as in HF."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
    inv_freq = 1.0 / (theta ** exponents)  # [head_dim / 2]
    freqs = positions.float()[:, None] * inv_freq[None, :]  # [n, head_dim / 2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [n, head_dim]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              scale: float, softcap: float | None) -> torch.Tensor:
    """Bidirectional GQA attention. q [B, H, n, d], k/v [B, Hkv, n, d], mask bool [n, n] (True = keep).

    Without a softcap this is one SDPA call; with one, the logits need a tanh before the softmax,
    which SDPA cannot express, so it runs the explicit math (softmax in fp32, as HF eager does).
    """
    groups = q.shape[1] // k.shape[1]
    if softcap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=groups > 1)
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale  # [B, H, n, n]
    logits = torch.tanh(logits / softcap) * softcap
    if mask is not None:
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, v)


class SelfAttention(nn.Module):
    def __init__(self, cfg: T5GemmaEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, hkv, d, bias = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.attention_bias
        self.q_proj = Linear(cfg.hidden_size, h * d, bias=bias)
        self.k_proj = Linear(cfg.hidden_size, hkv * d, bias=bias)
        self.v_proj = Linear(cfg.hidden_size, hkv * d, bias=bias)
        self.o_proj = Linear(h * d, cfg.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None
                ) -> torch.Tensor:
        b, n, _ = x.shape  # [B, n, D]
        d = self.cfg.head_dim
        q = self.q_proj(x).view(b, n, -1, d).transpose(1, 2)  # [B, H, n, d]
        k = self.k_proj(x).view(b, n, -1, d).transpose(1, 2)  # [B, Hkv, n, d]
        v = self.v_proj(x).view(b, n, -1, d).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        out = attention(q, k, v, mask, self.cfg.query_pre_attn_scalar ** -0.5, self.cfg.softcap)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))  # [B, n, D]


class GatedMLP(nn.Module):
    def __init__(self, cfg: T5GemmaEncoderConfig) -> None:
        super().__init__()
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.approximate = _ACTIVATIONS[cfg.hidden_activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate=self.approximate) * self.up_proj(x))


class EncoderLayer(nn.Module):
    """Pre- and post-norm around both sub-blocks (Gemma-2 "sandwich" norms)."""

    def __init__(self, cfg: T5GemmaEncoderConfig, layer_type: str) -> None:
        super().__init__()
        self.layer_type = layer_type
        self.self_attn = SelfAttention(cfg)
        self.pre_self_attn_layernorm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_self_attn_layernorm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = GatedMLP(cfg)
        self.pre_feedforward_layernorm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_feedforward_layernorm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None
                ) -> torch.Tensor:
        x = x + self.post_self_attn_layernorm(self.self_attn(self.pre_self_attn_layernorm(x), cos, sin, mask))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


def sliding_window_mask(n: int, window: int, device: torch.device) -> torch.Tensor | None:
    """Bool [n, n], True where |q - k| < window; None when the window covers the whole sequence."""
    if n <= window:
        return None
    pos = torch.arange(n, device=device)
    return (pos[:, None] - pos[None, :]).abs() < window


class T5GemmaEncoder(nn.Module):
    """The T5Gemma encoder stack: embed -> N layers -> final norm. No padding, batch of whole prompts."""

    def __init__(self, cfg: T5GemmaEncoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(EncoderLayer(cfg, t) for t in cfg.layer_types)
        self.norm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    @torch.no_grad()
    def encode(self, input_ids: torch.Tensor, device: torch.device | str | None = None,
               interrupt: Optional[Callable[[], None]] = None) -> torch.Tensor:
        """input_ids [B, n] (int) -> last hidden state [B, n, hidden_size] in the embedding's dtype.

        Every token attends (the reference passes the tokenizer's all-ones attention mask). `device`
        is where to compute (default: where the embedding table is); weights elsewhere are fetched
        per layer when an adapter set a fetcher (partial loading, happyhorse_core/fetch.py).
        `interrupt` (raises to stop, e.g. ComfyUI's Cancel) is called before every layer, so a
        cancelled encode stops within one layer. Callers bound n first (text.bounds): attention
        memory grows with n².
        """
        if input_ids.ndim != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be [batch, tokens] with at least one token, got {tuple(input_ids.shape)}")
        cfg = self.config
        ids = input_ids.to(self.embed_tokens.weight.device if device is None else device)
        if int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size:
            raise ValueError(f"token ids must lie in 0..{cfg.vocab_size - 1}, got range "
                             f"{int(ids.min())}..{int(ids.max())}; tokenizer and encoder do not match")
        x = self.embed_tokens(ids)  # [B, n, D]
        # HF rounds the sqrt(D) normalizer to the activation dtype first (bf16: 59.87 -> 60.0).
        x = x * torch.tensor(math.sqrt(cfg.hidden_size), dtype=x.dtype)
        n = ids.shape[1]
        cos, sin = rotary_cos_sin(torch.arange(n, device=ids.device), cfg.head_dim, cfg.rope_theta, x.dtype)
        masks = {FULL: None, SLIDING: sliding_window_mask(n, cfg.sliding_window, ids.device)}
        for layer in self.layers:
            if interrupt is not None:
                interrupt()
            x = layer(x, cos, sin, masks[layer.layer_type])
        return self.norm(x)

    forward = encode


class TextFeatures(NamedTuple):
    features: torch.Tensor  # [length, hidden] fp32, rounded through fp16
    length: int  # rows kept (min(tokens, max_tokens)); only these reach the DiT
    truncated: bool  # True when the prompt had more than max_tokens tokens
    tokens: Optional[Any] = None  # text.bounds.PromptTokens (the count before the cut) when known


def text_features(hidden: torch.Tensor, max_tokens: int = MAX_TEXT_TOKENS) -> TextFeatures:
    """Post-process encoder output as the reference does (MODEL_SPEC §6.1).

    hidden [1, n, D] or [n, D] -> fp16 round trip -> first min(n, max_tokens) rows as fp32.
    The reference zero-pads to max_tokens and then slices to the same length, so no padding is kept.
    """
    if hidden.ndim == 3:
        if hidden.shape[0] != 1:
            raise ValueError(f"text_features takes one prompt at a time, got batch {hidden.shape[0]}")
        hidden = hidden[0]
    if hidden.ndim != 2:
        raise ValueError(f"hidden must be [1, n, D] or [n, D], got {tuple(hidden.shape)}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    n = hidden.shape[0]
    keep = min(n, max_tokens)
    feat = hidden[:keep].to(torch.float16).to(torch.float32)  # [keep, D]
    return TextFeatures(feat, keep, n > max_tokens)


def encode_prompt(encoder: T5GemmaEncoder, tokenizer: Any, prompt: str, max_tokens: int = MAX_TEXT_TOKENS,
                  device: torch.device | str | None = None, *, what: str = "prompt",
                  interrupt: Optional[Callable[[], None]] = None) -> TextFeatures:
    """Prompt string -> DiT text features. `tokenizer` needs `encode(str) -> list[int]`; `device` as in encode.

    The tokens are counted and cut to `max_tokens` BEFORE the encoder runs (text.bounds), so the
    encoder's memory and time do not depend on the prompt's length. The reference encodes the
    whole prompt and keeps the first rows; for prompts over the limit the kept rows therefore
    differ slightly from the reference's (their attention did not see the cut-off tail), which
    is the price of a bounded run. `what` names the text in messages ("prompt", "negative prompt");
    `interrupt` is called before every encoder layer.
    """
    from .bounds import prompt_tokens

    counted = prompt_tokens(tokenizer, prompt, max_tokens, what=what)
    input_ids = torch.tensor([counted.ids], dtype=torch.long)  # [1, min(n, max_tokens)]
    feats = text_features(encoder.encode(input_ids, device, interrupt=interrupt), max_tokens)
    return feats._replace(truncated=counted.truncated, tokens=counted)
