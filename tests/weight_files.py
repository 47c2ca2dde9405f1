"""Write a tiny random DiT in each published on-disk layout (WEIGHT_LAYOUTS.md), for loader tests.

Each writer starts from our canonical state dict and re-creates what the third-party tool
would have produced: HF shards + index, diffusers folder, wrapper prefixes, Wan2GP split
experts, quanto int8, SanDiegoDude / ComfyUI / weight_scale fp8.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from happyhorse_core.dit.config import PRESETS, DiTConfig
from happyhorse_core.dit import SandwichDiT
from happyhorse_core.dit.fp8 import quantize
from happyhorse_core.dit.ops import KEEP_FP32_SUFFIXES, Ops

LINEAR_SUFFIXES = ("linear_qkv.weight", "linear_proj.weight", "up_gate_proj.weight", "down_proj.weight")


def tiny_state(cfg: DiTConfig | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Canonical state dict of a random model: block linears bf16, the rest fp32."""
    model = SandwichDiT(cfg or PRESETS["tiny"], Ops())
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in model.state_dict().items():
        if name.endswith("rope.bands"):
            out[name] = t.clone()
            continue
        std = 0.1 if t.ndim == 1 else t.shape[1] ** -0.5
        out[name] = (torch.randn(t.shape, generator=g) * std).to(t.dtype)
    return out


def is_linear(key: str) -> bool:
    return key.startswith("block.layers.") and key.endswith(LINEAR_SUFFIXES)


def cast_all(sd: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) for k, v in sd.items()}


def with_prefix(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def save_sharded(sd: dict, folder: Path, shards: int = 3, stem: str = "model", metadata: dict | None = None) -> Path:
    """HF style: <stem>-0000i-of-0000n.safetensors + <stem>.safetensors.index.json."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(sd)
    weight_map = {}
    for i in range(shards):
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k].contiguous() for k in keys[i::shards]}
        save_file(part, folder / name, metadata=metadata)
        weight_map.update({k: name for k in part})
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())},
             "weight_map": weight_map}
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps(index))
    return folder


def to_split_experts(sd: dict, cfg: DiTConfig) -> dict:
    """Wan2GP schema: linear_qkv -> linear_q/k/v/g; mm-layer linears get _video/_audio/_text."""
    out = {}
    sizes = [("q", cfg.num_heads_q * cfg.head_dim), ("k", cfg.num_heads_kv * cfg.head_dim),
             ("v", cfg.num_heads_kv * cfg.head_dim)] + ([("g", cfg.num_heads_q)] if cfg.enable_attn_gating else [])
    for key, t in sd.items():
        if not is_linear(key):
            out[key] = t
            continue
        layer = int(key.split(".")[2])
        mods = ["_video", "_audio", "_text"] if layer in cfg.mm_layers else [""]
        experts = t.chunk(len(mods))
        base = key[:-len(".weight")]
        for m, e in zip(mods, experts):
            if key.endswith("linear_qkv.weight"):
                stem = base[:-len("linear_qkv")]
                for (p, n), piece in zip(sizes, e.split([n for _, n in sizes])):
                    out[f"{stem}linear_{p}{m}.weight"] = piece.clone()
            else:
                out[f"{base}{m}.weight"] = e.clone()
    return out


def to_quanto_int8(sd: dict) -> tuple[dict, dict]:
    """Linears -> `.weight._data` int8 + `.weight._scale` [out, 1]; returns (file dict, dequantized expectation)."""
    out, expect = {}, {}
    for key, t in sd.items():
        if not (key.startswith("block.layers.") and key.endswith(".weight") and t.ndim == 2):
            out[key] = t
            continue
        scale = (t.float().abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-8).to(torch.bfloat16)
        data = (t.float() / scale.float()).round().clamp(-127, 127).to(torch.int8)
        out[key + "._data"], out[key + "._scale"] = data, scale
        expect[key] = (data.float() * scale.float()).to(torch.bfloat16)
    return out, expect


def to_fp8(sd: dict, naming: str | None, dtype=torch.float8_e4m3fn) -> tuple[dict, dict]:
    """Block linears -> fp8 with per-tensor scales named per `naming` (None = no scales).

    naming: "sdd" `<param>.__fp8_scale`, "comfy" `<layer>.scale_weight` (+ `scaled_fp8` marker),
    "ours" `<layer>.weight_scale`. Returns (file dict, {key: (fp8 tensor, scale or None)}).
    """
    out, quant = {}, {}
    for key, t in sd.items():
        if not is_linear(key):
            out[key] = t
            continue
        q, s = quantize(t, dtype, scaled=naming is not None)
        out[key], quant[key] = q, (q, s)
        layer = key[:-len(".weight")]
        if naming == "sdd":
            out[key + ".__fp8_scale"] = s
        elif naming == "comfy":
            out[layer + ".scale_weight"] = s
        elif naming == "ours":
            out[layer + ".weight_scale"] = s
    if naming == "comfy":
        out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out, quant


def keep_fp32(key: str) -> bool:
    return key.endswith(KEEP_FP32_SUFFIXES)
