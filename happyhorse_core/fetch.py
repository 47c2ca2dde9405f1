"""The weight-fetch step: how every weight-holding layer reads its weights (the low-VRAM hook).

Contract
--------
A layer that holds weights (`WeightHost`: ExpertLinear, ExpertRMSNorm, the fp32 Linear of the DiT,
the T5Gemma Linear / Embedding / RMSNorm, the Turbo-VAED convs) never reads `self.weight`,
`self.bias` or `self.weight_scale` in its forward. It calls, ONCE per call,

    f = self.fetch(x.device)   # Fetched(weight, bias, scale, token), all on x's device
    ... use f.weight / f.bias / f.scale (slice experts, upcast, multiply by the scale) ...
    self.release(f)            # after the LAST use of f's tensors

* The device comes from the inputs, never from a weight: under a partial load the weights may live
  on the CPU while the activations are on the GPU.
* `f.weight` is in the STORAGE dtype (bf16, fp8, fp32) and shape of the parameter, the WHOLE
  tensor (all experts stacked): a weight patch (LoRA) is applied to the whole tensor, and the
  layer slices experts and upcasts afterwards exactly as it does with its own parameter.
* Without a fetcher (`weight_fetcher is None`, the default) `fetch` returns the module's own
  tensors and `token=None`: no copy, no new op, the same numbers as before the hook existed.
* With a fetcher (set per instance by an adapter, e.g. nodes/comfy_ops.py for ComfyUI's partial
  loading), `fetcher.fetch(module, device)` returns copies on `device` (with any weight patches
  applied, rounded back to the storage dtype) and `fetcher.release(module, fetched)` is called with
  what it returned. Nothing is cached across calls: the next call fetches again (a patcher may
  replace the parameters between calls).
* A fetched copy of an unpatched weight holds the same bytes as the parameter, so a layer whose
  weights are fetched gives bit-identical outputs to one whose weights were moved to the device.

This module imports no ComfyUI. `iter_hosts(model)` lists the hosts for an adapter.
"""
from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn


class Fetched(NamedTuple):
    weight: torch.Tensor  # the whole parameter, storage dtype, on the compute device
    bias: Optional[torch.Tensor]  # None for bias-free layers
    scale: Optional[torch.Tensor]  # per-tensor fp8 `weight_scale` (fp32 scalar) or None
    token: Any  # fetcher's handle for release(); None when the module's own tensors are returned


class WeightFetcher(Protocol):
    def fetch(self, module: "WeightHost", device: torch.device) -> Fetched: ...

    def release(self, module: "WeightHost", fetched: Fetched) -> None: ...


class WeightHost:
    """Mixin for nn.Modules with a `weight` (and optionally `bias`, `weight_scale`). See the module docstring."""

    weight_fetcher: Optional[WeightFetcher] = None  # class default: read own tensors; adapters set it per instance

    def fetch(self, device: torch.device) -> Fetched:
        fetcher = self.weight_fetcher
        if fetcher is None:
            return Fetched(self.weight, getattr(self, "bias", None), getattr(self, "weight_scale", None), None)
        return fetcher.fetch(self, device)

    def release(self, fetched: Fetched) -> None:
        if fetched.token is not None:
            self.weight_fetcher.release(self, fetched)


def iter_hosts(model: nn.Module) -> Iterator[tuple[str, WeightHost]]:
    """(qualified name, module) for every WeightHost in `model`."""
    for name, m in model.named_modules():
        if isinstance(m, WeightHost):
            yield name, m


def as_compute(weight: torch.Tensor, scale: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """A stored weight (any float dtype, optional per-tensor scale) in `dtype`: (w.float() * s).to(dtype)."""
    if scale is not None:
        return (weight.to(torch.float32) * scale).to(dtype)
    return weight.to(dtype)


class Linear(nn.Linear, WeightHost):
    """nn.Linear (same keys) that reads its weights through the fetch step.

    The weight is used in the input's dtype: for fp32 heads and bf16 encoders that is the storage
    dtype (no op); fp8 storage (text encoder) is upcast per call, times the `weight_scale` buffer
    when one is registered (scaled fp8).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        f = self.fetch(x.device)
        w = f.weight if f.weight.dtype == x.dtype and f.scale is None else as_compute(f.weight, f.scale, x.dtype)
        b = f.bias if f.bias is None or f.bias.dtype == x.dtype else f.bias.to(x.dtype)
        out = F.linear(x, w, b)
        self.release(f)
        return out


class Embedding(nn.Embedding, WeightHost):
    """nn.Embedding (same key) that reads its table through the fetch step; rows come out in the table dtype."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [...] int -> [..., D]
        f = self.fetch(ids.device)
        out = F.embedding(ids, f.weight, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq,
                          self.sparse)
        self.release(f)
        return out


class Conv2d(nn.Conv2d, WeightHost):
    """nn.Conv2d (same keys) that reads its weights through the fetch step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, Cin, H, W] -> [N, Cout, H', W']
        f = self.fetch(x.device)
        out = self._conv_forward(x, f.weight, f.bias)
        self.release(f)
        return out


class Conv3d(nn.Conv3d, WeightHost):
    """nn.Conv3d (same keys) that reads its weights through the fetch step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, Cin, T, H, W] -> [N, Cout, T', H', W']
        f = self.fetch(x.device)
        out = self._conv_forward(x, f.weight, f.bias)
        self.release(f)
        return out
