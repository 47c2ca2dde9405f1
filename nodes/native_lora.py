"""LoRA on the HappyHorse MODEL: key map, checks, and the loader behind 'HappyHorse LoRA Loader'.

A HappyHorse LoRA names its targets after the model's own parameters (the reference's state-dict
keys, e.g. `block.layers.0.attention.linear_qkv`). Core LoraLoaderModelOnly already maps, for any
BaseModel (comfy/lora.py `model_lora_keys_unet`):
  * `diffusion_model.<P>` + `.lora_A/.lora_B` (PEFT) or `.lora_up/.lora_down` -> the whole weight,
  * `lora_unet_<P with . -> _>` (kohya, with `.alpha`) -> the whole weight.
It cannot map BARE `<P>` keys (core adds those only for its own model classes) and only logs
keys it did not load. This loader adds:
  * bare `<P>` keys (PEFT files saved without the `diffusion_model.` prefix);
  * per-expert names for the stacked sandwich weights: `<P>.video`, `<P>.audio`, `<P>.text` (with
    or without the prefix, and their kohya spelling) patch only that expert's rows of the
    [3·out, in] weight (an offset key, as core does for Flux's fused qkv), so the other experts'
    rows stay bit-identical;
  * an error naming the file when no key matches, and a refusal for scaled-fp8 weights (ComfyUI
    would add the LoRA to the raw fp8 codes, ignoring `weight_scale`).
Patches are ComfyUI's: merged into bf16 weights at load, applied at fetch time for fp8 weights and
for offloaded modules (nodes/native_model.py HHModelPatcher, nodes/comfy_ops.py).
"""
from __future__ import annotations

import logging
import os

from ..happyhorse_core.dit.ops import ExpertLinear

from .native_model import require_happyhorse

log = logging.getLogger("HappyHorse")

EXPERT_NAMES = ("video", "audio", "text")  # row blocks of a 3-expert (sandwich) weight, in order
PREFIX = "diffusion_model."


def lora_key_map(model) -> dict:
    """LoRA target name -> model key (or (key, (dim, start, length)) for one expert's rows)."""
    import comfy.lora
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    for name, m in model.diffusion_model.named_modules():
        weight = m.__dict__.get("_parameters", {}).get("weight")
        if weight is None:
            continue
        key = f"{PREFIX}{name}.weight"
        key_map.setdefault(name, key)  # bare PEFT names
        if isinstance(m, ExpertLinear) and m.experts > 1:
            out = m.out_features
            for i, expert in enumerate(EXPERT_NAMES[:m.experts]):
                alias = f"{name}.{expert}"
                target = (key, (0, i * out, out))
                for k in (alias, PREFIX + alias, "lora_unet_" + alias.replace(".", "_")):
                    key_map[k] = target
    return key_map


def scaled_fp8_keys(model) -> set[str]:
    return {f"{PREFIX}{name}.weight" for name, m in model.diffusion_model.named_modules()
            if getattr(m, "weight_scale", None) is not None}


def load_patches(patcher, lora_sd: dict, lora_name: str) -> dict:
    """ComfyUI patches for this LoRA on a HappyHorse MODEL; ValueError (naming the file) if none match."""
    import comfy.lora
    import comfy.lora_convert
    model = require_happyhorse(patcher, "HappyHorse LoRA Loader")
    lora = comfy.lora_convert.convert_lora(lora_sd)
    patches = comfy.lora.load_lora(lora, lora_key_map(model))
    if not patches:
        sample = ", ".join(sorted(lora_sd)[:3])
        raise ValueError(f"LoRA {lora_name}: none of its {len(lora_sd)} keys names a HappyHorse parameter (first: "
                         f"{sample}). Expected names like block.layers.0.attention.linear_qkv.lora_A.weight (PEFT, "
                         "optionally with a diffusion_model. prefix) or lora_unet_block_layers_0_attention_linear_qkv."
                         "lora_down.weight (kohya); this file is probably for another model")
    scaled = scaled_fp8_keys(model) & {k[0] if isinstance(k, tuple) else k for k in patches}
    if scaled:
        raise ValueError(f"LoRA {lora_name}: the model was loaded with weight_dtype fp8_e4m3fn_scaled, whose "
                         "per-tensor scales LoRA patches cannot follow; load it with fp8_e4m3fn (or bf16) to use a LoRA")
    return patches


def read_lora_file(path: str) -> dict:
    """A LoRA file's tensors (safetensors memory-mapped, or a weights-only torch file), via ComfyUI's reader."""
    import comfy.utils
    return comfy.utils.load_torch_file(path, safe_load=True)


def apply_lora(patcher, lora_sd: dict, strength: float, lora_name: str):
    """A clone of the MODEL with the LoRA added at `strength`."""
    patches = load_patches(patcher, lora_sd, lora_name)
    new = patcher.clone()
    added = new.add_patches(patches, strength)
    missed = [k for k in patches if k not in set(added)]
    if missed:
        log.warning("HappyHorse: LoRA %s: %d patches did not apply: %s", lora_name, len(missed), missed[:5])
    log.info("HappyHorse: LoRA %s: %d weights patched at strength %s", os.path.basename(lora_name), len(added),
             strength)
    return new
