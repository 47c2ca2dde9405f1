"""Random weights for a full-size DiT without a checkpoint, shared by bench/gpu_memory.py and bench/vram_matrix.py.

The model is built on the meta device (no memory) and each tensor is then made on the target device
one at a time, so the host never holds the whole model; fp8 layers are quantised the way the real
loaders do (per-tensor scale where the layer has one).
"""
from __future__ import annotations

import torch

from happyhorse_core.dit import SandwichDiT, fp8
from happyhorse_core.weights.checks import assign_tensor


def materialise_random_(model: SandwichDiT, device: torch.device, seed: int = 0) -> SandwichDiT:
    """Fill a meta-built `model` on `device` in place: matrices N(0, 1/fan_in), vectors N(0, 0.1^2);
    returns it in eval mode."""
    g = torch.Generator(device).manual_seed(seed)
    for name, t in list(model.state_dict().items()):
        if name.endswith(("rope.bands", "weight_scale")):
            continue
        std = 0.1 if t.ndim == 1 else t.shape[1] ** -0.5
        w = torch.randn(t.shape, generator=g, device=device, dtype=torch.bfloat16) * std
        if fp8.is_fp8(t.dtype):
            owner = model.get_submodule(name.rsplit(".", 1)[0])
            q, scale = fp8.quantize(w, t.dtype, scaled=owner.weight_scale is not None)
            assign_tensor(model, name, q)
            if scale is not None:
                assign_tensor(model, name[:-len("weight")] + "weight_scale", scale)
        else:
            assign_tensor(model, name, w.to(t.dtype))
        del w
    model.adapter.rope.bands = model.adapter.rope.bands.to(device)
    return model.eval()
