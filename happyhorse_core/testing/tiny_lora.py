"""Tiny random LoRA files for the tiny DiT (tests and the shipped-workflow runs).

A LoRA for this model names its targets after the model's own parameters (the reference's
state-dict keys, e.g. `block.layers.0.attention.linear_qkv`). The forms written here are the
ones users ship:
  * "peft":       `diffusion_model.<P>.lora_A.weight` [r, in] / `.lora_B.weight` [out, r]
  * "peft_bare":  `<P>.lora_A.weight` / `<P>.lora_B.weight` (no prefix)
  * "kohya":      `lora_unet_<P with . -> _>.lora_down.weight` / `.lora_up.weight` / `.alpha`
  * "expert":     `<P>.<video|audio|text>.lora_A/B.weight`: one expert's rows of a stacked
                  (sandwich) weight, B is [out of one expert, r]
The update of a target is ΔW = B·A (times alpha / r for kohya files with an alpha).
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from .tiny_dit import tiny_config

FORMS = ("peft", "peft_bare", "kohya", "expert")
EXPERTS = ("video", "audio", "text")


def linear_targets(variant: str = "distill") -> dict[str, tuple[int, int, int]]:
    """Every block linear of the tiny DiT: parameter name without `.weight` -> (experts, out, in)."""
    cfg = tiny_config(variant)
    d, out = cfg.hidden_size, {}
    for i in range(cfg.num_layers):
        e, p = cfg.num_experts(i), f"block.layers.{i}"
        inter = cfg.mlp_intermediate(i)
        up = inter if cfg.is_gelu7(i) else 2 * inter
        out[f"{p}.attention.linear_qkv"] = (e, cfg.qkv_out, d)
        out[f"{p}.attention.linear_proj"] = (e, d, d)
        out[f"{p}.mlp.up_gate_proj"] = (e, up, d)
        out[f"{p}.mlp.down_proj"] = (e, d, inter)
    return out


def tiny_lora(targets: list[str], form: str = "peft", rank: int = 2, seed: int = 0, alpha: float | None = None,
              expert: str = "video", variant: str = "distill", scale: float = 0.05) -> dict[str, torch.Tensor]:
    """A random LoRA state dict (fp32) on `targets` (names from linear_targets) in one of FORMS."""
    if form not in FORMS:
        raise ValueError(f"LoRA form must be one of {FORMS}, got {form!r}")
    shapes = linear_targets(variant)
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name in targets:
        experts, out, fan_in = shapes[name]
        rows = out if form == "expert" else experts * out
        a = torch.randn(rank, fan_in, generator=g) * scale
        b = torch.randn(rows, rank, generator=g) * scale
        if form == "peft":
            sd[f"diffusion_model.{name}.lora_A.weight"], sd[f"diffusion_model.{name}.lora_B.weight"] = a, b
        elif form == "peft_bare":
            sd[f"{name}.lora_A.weight"], sd[f"{name}.lora_B.weight"] = a, b
        elif form == "expert":
            if experts == 1:
                raise ValueError(f"{name} holds one weight set; expert LoRAs target the sandwich layers")
            sd[f"{name}.{expert}.lora_A.weight"], sd[f"{name}.{expert}.lora_B.weight"] = a, b
        else:
            k = "lora_unet_" + name.replace(".", "_")
            sd[f"{k}.lora_down.weight"], sd[f"{k}.lora_up.weight"] = a, b
            if alpha is not None:
                sd[f"{k}.alpha"] = torch.tensor(float(alpha))
    return sd


def write_tiny_lora(path: str | Path, form: str = "peft", **kwargs) -> Path:
    """Save a tiny LoRA (default: the attention and MLP linears of layers 0 and 2)."""
    targets = kwargs.pop("targets", ["block.layers.0.attention.linear_qkv", "block.layers.0.mlp.down_proj",
                                     "block.layers.2.attention.linear_proj", "block.layers.2.mlp.up_gate_proj"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tiny_lora(targets, form, **kwargs).items()}, str(path),
              metadata={"happyhorse": f"tiny random {form} LoRA (test weights)"})
    return path
