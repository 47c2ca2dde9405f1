"""Binds the core's weight-fetch step (happyhorse_core/fetch.py) to ComfyUI's low-VRAM protocol.

ComfyUI 0.3.75's ModelPatcher.load (comfy/model_patcher.py `_load_list` / `load`) lists every module
whose parameters are all its own; when the model does not fit the budget it leaves the largest
modules that carry `comfy_cast_weights` on the offload device, sets `comfy_cast_weights = True` and
gives them `weight_function` / `bias_function` lists (LoRA patches as `LowVramPatch`, weight
wrappers). A listed module WITHOUT the flag that does not fit simply stays on the CPU, unannounced.
`enable_partial_load(model)` gives every WeightHost of a pack model the attributes ComfyUI looks for
and a `ComfyFetcher`, so such modules are fetched to the compute device per call instead.

`ComfyFetcher.fetch(module, device)`:
* flag off, no functions, weight already on `device`: the module's own tensors (no copy);
* otherwise `comfy.ops.cast_bias_weight(module, dtype=<storage dtype>, device=device,
  offloadable=True)`: a byte copy on ComfyUI's offload stream, so an unpatched weight is
  bit-identical to a fully loaded one;
* with weight functions (LoRA under partial load) the cast is done in fp32, the functions run in
  fp32 and the result is rounded to the storage dtype with the key's seed
  (`comfy.float.stochastic_rounding(w, dtype, seed=string_to_seed(key))`), which is what a full
  load does in `ModelPatcher.patch_weight_to_device` -- so patched weights also match a full load.
  The functions see the WHOLE stacked expert weight; the layer slices experts afterwards.
`release` calls `comfy.ops.uncast_bias_weight` (lets the offload stream reuse the buffer).

Cancel: our layers do not call comfy.ops.run_every_op (ComfyUI's per-op interrupt check); the
sampler's per-step interrupt hook is what stops a run.

Limits: scaled-fp8 weights (`weight_scale`) get no convert_weight/set_weight, so a LoRA on a scaled
fp8 DiT is not supported by this adapter (ComfyUI would patch the raw fp8 values): `enable_partial_load`
returns the names of such modules so a caller can refuse patches on them.
"""
from __future__ import annotations

import torch
from torch import nn

from ..happyhorse_core.dit.align import to_padded, to_published
from ..happyhorse_core.fetch import Fetched, iter_hosts, WeightHost
from . import comfy_bridge as cb


class ComfyFetcher:
    """WeightFetcher speaking comfy.ops' cast_bias_weight / uncast_bias_weight (see module docstring)."""

    def fetch(self, m: WeightHost, device: torch.device) -> Fetched:
        scale = getattr(m, "weight_scale", None)
        bias = getattr(m, "bias", None)
        functions = bool(m.weight_function) or bool(m.bias_function)
        on_device = m.weight.device == device and (bias is None or bias.device == device)
        if not m.comfy_cast_weights and not functions and on_device:
            return Fetched(m.weight, bias, scale, None)
        storage = m.weight.dtype
        patched = bool(m.weight_function)
        dtype = torch.float32 if patched else storage
        bias_dtype = None if bias is None else bias.dtype
        w, b, stream = cb.cast_bias_weight(m, dtype, device, bias_dtype)
        if patched and w.dtype != storage:
            w = _round_like_full_load(w, storage, m.weight_function)
        if scale is not None and scale.device != device:
            scale = scale.to(device)
        return Fetched(w, b, scale, ("comfy", stream))

    def release(self, m: WeightHost, fetched: Fetched) -> None:
        cb.uncast_bias_weight(m, fetched.weight, fetched.bias, fetched.token[1])


def _round_like_full_load(w: torch.Tensor, storage: torch.dtype, functions: list) -> torch.Tensor:
    """fp32 patched weight -> storage dtype, rounded as ModelPatcher.patch_weight_to_device rounds it."""
    key = next((getattr(f, "key", None) for f in functions if getattr(f, "key", None)), None)
    return cb.stochastic_round(w, storage, key)


_FETCHER = ComfyFetcher()


def enable_partial_load(model: nn.Module) -> list[str]:
    """Give every WeightHost in `model` ComfyUI's cast attributes and the ComfyFetcher (idempotent).

    Returns the names of scaled-fp8 modules (no LoRA support under this adapter, see module docstring).
    """
    scaled = []
    for name, m in iter_hosts(model):
        if "comfy_cast_weights" not in m.__dict__:
            m.comfy_cast_weights = False
        if "weight_function" not in m.__dict__:
            m.weight_function = []
        if "bias_function" not in m.__dict__:
            m.bias_function = []
        if not hasattr(m, "bias"):
            m.bias = None
        m.weight_fetcher = _FETCHER
        if getattr(m, "weight_scale", None) is not None:
            scaled.append(name)
        elif getattr(m, "published", None) is not None and "convert_weight" not in m.__dict__:
            _bind_published_patching(m)
    return scaled


def _bind_published_patching(m: nn.Module) -> None:
    """Let ComfyUI patch a GEMM-padded linear (dit/align.py) with LoRAs shaped like the published weight.

    ModelPatcher finds `convert_weight` / `set_weight` by name (as for scaled fp8): the patch is computed
    on the published rows/columns, then the zero padding is put back and the result rounded to the
    storage dtype with the key's seed, as a full load rounds any patched weight."""
    def convert_weight(weight: torch.Tensor, inplace: bool = False, **_) -> torch.Tensor:
        return to_published(m, weight)

    def set_weight(weight: torch.Tensor, inplace_update: bool = False, seed: int = 0, return_weight: bool = False,
                   **_) -> torch.Tensor | None:
        out = cb.stochastic_round_seed(to_padded(m, weight), m.weight.dtype, seed)
        if return_weight:
            return out
        if inplace_update:
            m.weight.data.copy_(out)
        else:
            m.weight = nn.Parameter(out, requires_grad=False)
        return None

    m.convert_weight = convert_weight
    m.set_weight = set_weight


def offloaded_modules(model: nn.Module) -> list[str]:
    """Names of WeightHosts ComfyUI left on the offload device (comfy_cast_weights set by the patcher)."""
    return [name for name, m in iter_hosts(model) if m.__dict__.get("comfy_cast_weights")]
