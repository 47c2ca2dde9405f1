"""Layer factories for the DiT: the model never builds nn.Linear / norms directly.

`Ops` bundles the storage and compute choices (weight dtype, compute dtype, which layers may
be stored in fp8) so fp8 or scaled-fp8 weights are an ops choice rather than a model fork.

Numerics follow the reference (MODEL_SPEC §1.3): every transformer-block linear casts its
input and weight to the compute dtype (bf16), multiplies, and returns the compute dtype; the
callers then upcast to the fp32 residual stream. Norms, embedders and output heads stay fp32.
With `compute_dtype=torch.float32` the same graph runs all-fp32 (the golden `output_fp32`).

fp8 storage (`weight_dtype` fp8_*): the weight is upcast per matmul, one expert's rows at a
time, to the compute dtype (optionally multiplied by its per-tensor `weight_scale`), so fp8
runs on CPU and any GPU. `fp8_matmul=True` additionally tries `torch._scaled_mm` on CUDA sm89+
(see fp8.py) and falls back to the upcast when it cannot run.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import fp8
from ..fetch import Fetched, Linear, WeightHost, as_compute
from .modality import ModalitySplit

FP8_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_scaled": torch.float8_e4m3fn,
              "fp8_e4m3fn_fast": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
# fp8_e4m3fn_fast = fp8_e4m3fn_scaled storage + fp8 tensor-core matmuls (torch._scaled_mm) on sm89+
SCALED_DTYPES = ("fp8_e4m3fn_scaled", "fp8_e4m3fn_fast")
WEIGHT_DTYPES = ("bf16", *FP8_DTYPES)
FP8_SCOPES = ("shared", "all")

# Precision policy as data: these parameters always keep fp32 storage whatever the weight
# dtype (suffix match on state_dict keys). Everything else is a block linear.
KEEP_FP32_SUFFIXES = (
    "pre_norm.weight", "q_norm.weight", "k_norm.weight",  # RMSNorm offsets
    "final_norm_video.weight", "final_norm_audio.weight",
    "final_linear_video.weight", "final_linear_audio.weight",  # output heads
    "video_embedder.weight", "video_embedder.bias", "audio_embedder.weight", "audio_embedder.bias",
    "text_embedder.weight", "text_embedder.bias",  # adapter embedders
    "rope.bands",
)


@dataclass(frozen=True)
class Ops:
    """How to store and compute block linears.

    weight_dtype: "bf16" (default) or one of FP8_DTYPES' keys; "fp8_e4m3fn_fast" = scaled e4m3fn
                  storage whose matmuls run on fp8 tensor cores (sm89+; elsewhere upcast).
    fp8_scope:    "shared" = only the single-weight middle layers (4..35 in the real model)
                  are stored in fp8; "all" = every block linear.
    compute_dtype: matmul dtype of block linears (bf16 faithful, fp32 for reference checks).
    device:       where parameters are created ("meta" for a free skeleton).
    fp8_matmul:   try torch._scaled_mm for e4m3fn weights on CUDA sm89+ (else upcast per matmul).
    """

    weight_dtype: str = "bf16"
    fp8_scope: str = "shared"
    compute_dtype: torch.dtype = torch.bfloat16
    device: torch.device | str | None = None
    fp8_matmul: bool = False

    def __post_init__(self) -> None:
        if self.weight_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weight dtype must be one of {WEIGHT_DTYPES}, got {self.weight_dtype!r}")
        if self.fp8_scope not in FP8_SCOPES:
            raise ValueError(f"fp8 scope must be one of {FP8_SCOPES}, got {self.fp8_scope!r}")

    def storage_dtype(self, shared_layer: bool) -> torch.dtype:
        """Storage dtype of a block linear in a shared (True) or sandwich (False) layer."""
        if self.weight_dtype in FP8_DTYPES and (shared_layer or self.fp8_scope == "all"):
            return FP8_DTYPES[self.weight_dtype]
        return torch.bfloat16

    def scaled(self) -> bool:
        return self.weight_dtype in SCALED_DTYPES

    def fast_fp8(self) -> bool:
        """fp8 matmuls through torch._scaled_mm where the GPU has them (else upcast per matmul)."""
        return self.fp8_matmul or self.weight_dtype == "fp8_e4m3fn_fast"

    def expert_linear(self, in_features: int, out_features: int, experts: int, shared_layer: bool) -> "ExpertLinear":
        dtype = self.storage_dtype(shared_layer)
        scaled = self.scaled() and dtype != torch.bfloat16
        return ExpertLinear(in_features, out_features, experts, dtype=dtype, scaled=scaled, device=self.device,
                            fp8_matmul=self.fast_fp8())

    def rms_norm(self, dim: int, experts: int = 1, eps: float = 1e-6) -> "ExpertRMSNorm":
        return ExpertRMSNorm(dim, experts, eps=eps, device=self.device)

    def fp32_linear(self, in_features: int, out_features: int, bias: bool) -> Linear:
        return Linear(in_features, out_features, bias=bias, dtype=torch.float32, device=self.device)


class ExpertLinear(nn.Module, WeightHost):
    """Bias-free linear with `experts` weight sets stacked along dim 0: weight [E*out, in].

    Rows of modality m use weight rows [m*out, (m+1)*out). Storage may be bf16 or fp8 (with an
    optional per-tensor `weight_scale`); the matmul always runs in the compute dtype. The weight is
    read through the fetch step (happyhorse_core/fetch.py): the whole stacked tensor once per call.
    """

    bias = None  # bias-free (read by weight fetchers)

    def __init__(self, in_features: int, out_features: int, experts: int = 1, *, dtype=torch.bfloat16,
                 scaled: bool = False, device=None, fp8_matmul: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features, self.experts = in_features, out_features, experts
        self.fp8_matmul = fp8_matmul
        self.weight = nn.Parameter(torch.empty(experts * out_features, in_features, dtype=dtype, device=device),
                                   requires_grad=False)
        if scaled:
            self.register_buffer("weight_scale", torch.ones((), dtype=torch.float32, device=device))
        else:
            self.weight_scale = None

    def _rows(self, w: torch.Tensor, m: int) -> torch.Tensor:
        """Rows of expert m of a stacked [E*out, in] weight: [out, in] (a view)."""
        n = self.out_features
        return w if self.experts == 1 else w[m * n:(m + 1) * n]

    def expert_weight(self, m: int, dtype: torch.dtype, fetched: Fetched | None = None) -> torch.Tensor:
        """Rows of expert m, [out, in], in `dtype` (fp8 upcast and scaled here, per call).

        `fetched` is this call's fetch (own tensors when None)."""
        f = fetched if fetched is not None else Fetched(self.weight, None, self.weight_scale, None)
        return as_compute(self._rows(f.weight, m), f.scale, dtype)

    def compute_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The full [E*out, in] weight in `dtype`."""
        return torch.cat([self.expert_weight(m, dtype) for m in range(self.experts)])

    def _matmul(self, rows: torch.Tensor, m: int, compute_dtype: torch.dtype, f: Fetched) -> torch.Tensor:
        if self.fp8_matmul and fp8.is_fp8(f.weight.dtype):
            out = fp8.scaled_mm_linear(rows, self._rows(f.weight, m), f.scale, compute_dtype)
            if out is not None:
                return out
        return nn.functional.linear(rows, self.expert_weight(m, compute_dtype, f))

    def forward(self, x: torch.Tensor, split: ModalitySplit, compute_dtype: torch.dtype) -> torch.Tensor:
        # x: [L, in] -> [L, out] in compute_dtype; expert m's weight rows are upcast only for its rows
        x = x.to(compute_dtype)
        f = self.fetch(x.device)  # whole stacked weight, storage dtype, on x's device
        out = split.route(x, self.experts, lambda rows, m: self._matmul(rows, m, compute_dtype, f))
        self.release(f)
        return out

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, experts={self.experts}, dtype={self.weight.dtype}"


class ExpertRMSNorm(nn.Module, WeightHost):
    """RMSNorm with the reference's offset weights: y = x / rms(x) * (1 + w), in fp32.

    With 3 experts the weight is [3*dim] = [video | audio | text]. Works on the last axis, so
    it also serves per-head q/k norms ([L, heads, head_dim] with dim = head_dim). The weight is
    read through the fetch step, here and in the fused helpers of rowwise.py (`offset`).
    """

    bias = None  # weight only (read by weight fetchers)

    def __init__(self, dim: int, experts: int = 1, eps: float = 1e-6, device=None) -> None:
        super().__init__()
        self.dim, self.experts, self.eps = dim, experts, eps
        self.weight = nn.Parameter(torch.zeros(experts * dim, dtype=torch.float32, device=device),
                                   requires_grad=False)

    def offset(self, w: torch.Tensor, m: int) -> torch.Tensor:
        """The (1 + w) multiplier of expert m from a fetched weight `w` [E*dim]: fp32 [dim]."""
        return 1.0 + w[m * self.dim:(m + 1) * self.dim]

    def _norm(self, x: torch.Tensor, m: int, w: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.offset(w, m)).to(x.dtype)

    def forward(self, x: torch.Tensor, split: ModalitySplit | None = None) -> torch.Tensor:
        f = self.fetch(x.device)
        if self.experts == 1 or split is None:
            out = self._norm(x, 0, f.weight)
        else:
            out = split.route(x, self.experts, lambda rows, m: self._norm(rows, m, f.weight))
        self.release(f)
        return out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, experts={self.experts}, eps={self.eps}"
