"""fp8_e4m3fn_fast: fp8 tensor-core matmuls (torch._scaled_mm), activations quantized on the fly.

Accuracy is measured on the golden cases with the CPU emulation of the same quantization
(fp8.emulate_scaled_mm: activations rounded to e4m3fn with per-row or per-tensor absmax scales,
weights as stored, fp32 accumulation) against the bf16 model. Relative L2 of the raw output x_out,
measured on this tree (torch 2.13 CPU; t2v / i2v, max of the two):

| case | scope | storage only (upcast) | fast, per-row | fast, per-tensor |
|---|---|---|---|---|
| dit_case1 | shared | 0.050 | 0.067 | 0.071 |
| dit_case1 | all | 0.073 | 0.100 | 0.103 |
| dit_case2_sr | shared | 0.059 | 0.081 | 0.083 |
| dit_case2_sr | all | 0.079 | 0.105 | 0.108 |

(The golden models are 96-128 wide with large random weights, so e4m3fn's 3 mantissa bits show
more than at full size; the bf16 path itself is 0.006-0.009 from the reference there.) Bounds
are ~1.5x the measured per-tensor column. The real kernel is checked against the emulation
where the GPU has fp8 tensor cores (sm89+), and skipped elsewhere.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from happyhorse_core.dit import SandwichDiT, fp8
from happyhorse_core.dit.align import align_gemms_
from happyhorse_core.dit.config import config_from_reference
from happyhorse_core.dit.ops import Ops
from happyhorse_core.tools.parity import MODEL_PREFIXES, case_inputs, model_from_case, run_case

BOUNDS = {("dit_case1", "shared"): 0.107, ("dit_case1", "all"): 0.155,
          ("dit_case2_sr", "shared"): 0.125, ("dit_case2_sr", "all"): 0.162}


def fp8_model(tensors: dict, meta: dict, weight_dtype: str, scope: str) -> SandwichDiT:
    proxy = meta.get("data_proxy_config", {})
    cfg = config_from_reference(meta["arch_config"], coords_style=proxy.get("coords_style", "v2"),
                                frame_receptive_field=proxy.get("frame_receptive_field", 11))
    model = SandwichDiT(cfg, Ops(weight_dtype=weight_dtype, fp8_scope=scope))
    state = {k: v for k, v in tensors.items() if k.startswith(MODEL_PREFIXES)}
    for name, module in model.named_modules():
        if getattr(module, "weight_scale", None) is not None:
            state[name + ".weight"], state[name + ".weight_scale"] = fp8.quantize(
                state[name + ".weight"], module.weight.dtype, scaled=True)
    model.load_state_dict(state)
    align_gemms_(model)  # as the loader does: every fp8 GEMM dimension a multiple of 16
    return model.eval()


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_fast_dtype_is_scaled_e4m3fn_storage_with_fp8_matmul():
    ops = Ops(weight_dtype="fp8_e4m3fn_fast")
    assert ops.scaled() and ops.fast_fp8() and ops.storage_dtype(True) == torch.float8_e4m3fn
    lin = ops.expert_linear(32, 16, 1, shared_layer=True)
    assert lin.fp8_matmul and lin.weight_scale is not None
    assert not Ops(weight_dtype="fp8_e4m3fn_scaled").fast_fp8()


def test_without_fp8_tensor_cores_fast_equals_upcast_storage():
    """On CPU (no emulation) the fast dtype runs exactly like scaled fp8 storage."""
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(48, 32, generator=g) * 0.1, torch.randn(10, 32, generator=g)
    q, s = fp8.quantize(w, torch.float8_e4m3fn, scaled=True)
    assert fp8.scaled_mm_linear(x, q, s, torch.bfloat16) is None  # caller upcasts


@pytest.mark.parametrize("rowwise", [True, False])
def test_emulation_quantizes_activations_like_the_kernel(rowwise):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 64, generator=g) * torch.logspace(-2, 1, 20).unsqueeze(1)  # rows of very different size
    w = torch.randn(32, 64, generator=g) * 0.05
    q, s = fp8.quantize(w, torch.float8_e4m3fn, scaled=True)
    xq, xs = fp8.quantize_activations(x, rowwise)
    assert xq.dtype == torch.float8_e4m3fn and xs.shape == ((20, 1) if rowwise else ())
    assert xq.float().abs().amax() <= 448
    with fp8.emulate_scaled_mm(rowwise):
        out = fp8.scaled_mm_linear(x, q, s, torch.float32)
    torch.testing.assert_close(out, (xq.float() * xs) @ (q.float() * s).t(), atol=1e-5, rtol=1e-5)
    exact = x @ w.t()
    err = ((out - exact).norm(dim=1) / exact.norm(dim=1))  # per row
    assert err.max() < 0.1  # e4m3fn: 3 mantissa bits on both operands
    if rowwise:  # per-row scales keep small rows as accurate as large ones
        assert err[:5].max() < 4 * err[-5:].max()


@pytest.mark.parity
@pytest.mark.parametrize("case", ["dit_case1", "dit_case2_sr"])
def test_fp8_matmul_accuracy_on_golden_cases(golden_dir, case):
    tensors = load_file(golden_dir / f"{case}.safetensors")
    meta = json.loads((golden_dir / f"{case}.json").read_text())
    inputs = case_inputs(tensors)
    ref = run_case(model_from_case(tensors, meta), inputs, torch.bfloat16)
    for scope in ("shared", "all"):
        storage = run_case(fp8_model(tensors, meta, "fp8_e4m3fn_scaled", scope), inputs, torch.bfloat16)
        fast = fp8_model(tensors, meta, "fp8_e4m3fn_fast", scope)
        for rowwise in (True, False):
            with fp8.emulate_scaled_mm(rowwise):
                out = run_case(fast, inputs, torch.bfloat16)
            for name in (k for k in ref if k.endswith("x_out")):
                err, err_storage = rel_l2(out[name], ref[name]), rel_l2(storage[name], ref[name])
                assert err <= BOUNDS[case, scope], (scope, rowwise, name, err)
                assert err_storage < err < 2 * err_storage  # activations really quantized, not wildly


def _sm89() -> bool:
    return torch.cuda.is_available() and fp8.scaled_mm_supported(torch.device("cuda"))


@pytest.mark.skipif(not _sm89(), reason="needs a CUDA GPU with fp8 tensor cores (sm89+)")
def test_real_scaled_mm_matches_the_emulation():
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(2)
    x = torch.randn(100, 256, generator=g, device=dev).bfloat16()
    w = torch.randn(512, 256, generator=g, device=dev) * 0.05
    q, s = fp8.quantize(w, torch.float8_e4m3fn, scaled=True)
    out = fp8.scaled_mm_linear(x, q, s, torch.bfloat16)
    assert out is not None and out.shape == (100, 512)
    with fp8.emulate_scaled_mm(fp8.rowwise_supported(dev)):
        emu = fp8.scaled_mm_linear(x, q, s, torch.float32)
    # same quantized operands, fp32 accumulation in both; the kernel rounds once to bf16 (2^-8)
    torch.testing.assert_close(out.float(), emu, atol=1e-2 * emu.abs().max().item(), rtol=2 ** -7)
