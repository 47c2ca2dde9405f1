"""Aligned GEMMs (dit/align.py): zero-padding the MLP width and the qkv rows adds only exact zeros.

What is exact, and tested with torch.equal: the padded weights hold the original ones plus zeros,
the padded activation columns are exactly +0, and state_dict() / load_state_dict() round-trip the
published shapes. What is not exact on any BLAS: the GEMM with K = 352 instead of 340 blocks and
sums the same products in another order (that is the point of padding: another kernel), so fp32
results move by accumulation rounding. The bound used for that: one reordered fp32 dot product of
K terms is off by about sqrt(K) * 2^-24 relative (random-walk rounding), ~1.1e-6 for K = 352, and
at most ~10 layers add up: max |padded - plain| <= 1e-5 * max |plain|. bf16 compute rounds those
fp32 sums to bf16 (2^-8 relative), so a reorder only shows where a sum sits on a rounding tie;
the golden bf16 mean error must stay within 2 % of the unpadded one (measured: bit-identical on
both cases, and 2.6e-6 max for fp32 at |x| ~ 4.4).
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from happyhorse_core.dit import SandwichDiT, fp8
from happyhorse_core.dit.align import align_gemms_, padded_width
from happyhorse_core.dit.config import PRESETS
from happyhorse_core.dit.ops import Ops
from happyhorse_core.dit.sequence import pack
from happyhorse_core.testing.tiny_dit import init_random_
from happyhorse_core.tools.parity import case_inputs, model_from_case, run_case


def run(model, seq):
    with torch.no_grad():
        return model(seq.video, seq.audio, seq.text, seq.coords, seq.tokens_per_frame)


def tiny_seq():
    g = torch.Generator().manual_seed(1)
    return pack(torch.randn(1, 48, 2, 4, 6, generator=g), torch.randn(1, 5, 64, generator=g),
                torch.randn(7, 3584, generator=g))


def random_model(ops: Ops) -> SandwichDiT:
    """Tiny random model; fp8 block linears get real per-tensor scales (not 1)."""
    source = init_random_(SandwichDiT(PRESETS["tiny"], Ops(compute_dtype=ops.compute_dtype)), seed=3)
    model = SandwichDiT(PRESETS["tiny"], ops)
    state = source.state_dict()
    with torch.no_grad():
        for name, module in model.named_modules():
            scale = getattr(module, "weight_scale", None)
            if scale is not None:
                q, s = fp8.quantize(state[f"{name}.weight"], module.weight.dtype, scaled=True)
                state[f"{name}.weight"], state[f"{name}.weight_scale"] = q, s
    model.load_state_dict(state)
    return model.eval()


def test_padded_width_rounds_up_to_the_multiple():
    assert padded_width(13652) == 13664 and padded_width(13664) == 13664 and padded_width(340) == 352
    assert PRESETS["distill"].swiglu7_intermediate == 13652  # the width that motivated all this


@pytest.mark.parametrize("weight_dtype", ["bf16", "fp8_e4m3fn_scaled"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiny_model_output_is_bit_identical_after_padding(weight_dtype, dtype):
    plain = random_model(Ops(compute_dtype=dtype, weight_dtype=weight_dtype, fp8_scope="all"))
    padded = copy.deepcopy(plain)
    cfg = PRESETS["tiny"]
    # SwiGLU 340 -> 352 (up_gate_proj and down_proj of 6 layers), linear_qkv rows 260 -> 272 (8 layers)
    assert align_gemms_(padded) == 2 * (cfg.num_layers - len(cfg.gelu7_layers)) + cfg.num_layers
    for layer in padded.layers:
        assert layer.attention.linear_qkv.weight.shape[0] % 16 == 0
    for layer in padded.layers:
        assert layer.mlp.down_proj.in_features % 16 == 0 and layer.mlp.down_proj.weight.shape[1] % 16 == 0
    assert align_gemms_(padded) == 0  # idempotent
    for lp, lq in zip(plain.layers, padded.layers):  # original blocks kept, zeros appended
        up_p, up_q = lp.mlp.up_gate_proj, lq.mlp.up_gate_proj
        e, rows = up_p.experts, up_p.out_features
        blocks = up_q.weight.view(e, -1, up_q.weight.shape[1])
        assert torch.equal(blocks[:, :rows].reshape(up_p.weight.shape), up_p.weight)
        assert not blocks[:, rows:].float().any()
        down_q, k = lq.mlp.down_proj.weight, lp.mlp.down_proj.in_features
        assert torch.equal(down_q[:, :k], lp.mlp.down_proj.weight) and not down_q[:, k:].float().any()
    seq = tiny_seq()
    for a, b in zip(run(plain, seq), run(padded, seq)):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_padded_activation_columns_are_exact_zeros():
    from happyhorse_core.dit import rowwise
    mlp_plain = init_random_(SandwichDiT(PRESETS["tiny"], Ops(compute_dtype=torch.float32)), seed=3).layers[3].mlp
    mlp = copy.deepcopy(mlp_plain)
    align_gemms_(mlp)  # works on any module holding MLPs / attention modules
    x = torch.randn(40, 128, generator=torch.Generator().manual_seed(2)).bfloat16()
    from happyhorse_core.dit.modality import ModalitySplit
    split = ModalitySplit(40, 0, 0)
    for dtype in (torch.float32, torch.bfloat16):
        act = rowwise.swiglu7_to(mlp.up_gate_proj(x, split, dtype), dtype)  # [40, 352]
        ref = rowwise.swiglu7_to(mlp_plain.up_gate_proj(x, split, dtype), dtype)  # [40, 340]
        assert act.shape[1] == 352 and torch.equal(act[:, 340:], torch.zeros_like(act[:, 340:]))
        assert not torch.signbit(act[:, 340:]).any()  # +0, so adding it never flips a -0 sum
        assert (act[:, :340] - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_state_dict_keeps_the_published_shapes_and_round_trips():
    plain = init_random_(SandwichDiT(PRESETS["tiny"], Ops()), seed=3).eval()
    padded = copy.deepcopy(plain)
    align_gemms_(padded)
    ref, got = plain.state_dict(), padded.state_dict()
    assert list(ref) == list(got)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    fresh = init_random_(SandwichDiT(PRESETS["tiny"], Ops()), seed=9).eval()
    align_gemms_(fresh)
    fresh.load_state_dict(ref)  # published shapes into a padded model
    assert fresh.layers[3].mlp.down_proj.weight.shape[1] == 352
    assert torch.equal(fresh.layers[3].mlp.down_proj.weight, padded.layers[3].mlp.down_proj.weight)


@pytest.mark.parity
@pytest.mark.parametrize("case, multiple", [("dit_case1", 16), ("dit_case2_sr", 48)])
def test_golden_parity_is_unchanged_by_padding(golden_dir, case, multiple):
    """dit_case1: SwiGLU width 340 -> 352. dit_case2_sr's width 256 is already a multiple of 16, so it
    is padded to a multiple of 48 (288) to exercise the windowed SR layers too."""
    tensors = load_file(golden_dir / f"{case}.safetensors")
    meta = json.loads((golden_dir / f"{case}.json").read_text())
    plain, padded = model_from_case(tensors, meta), model_from_case(tensors, meta)
    assert align_gemms_(padded, multiple) > 0
    inputs = case_inputs(tensors)
    for dtype in (torch.float32, torch.bfloat16):
        ref, got = run_case(plain, inputs, dtype), run_case(padded, inputs, dtype)
        for name in ref:
            if dtype == torch.float32:
                assert (ref[name] - got[name]).abs().max() <= 1e-5 * ref[name].abs().max(), name
            elif name.endswith("x_out"):
                err_plain = (ref[name] - tensors[name]).abs().mean()
                err_padded = (got[name] - tensors[name]).abs().mean()
                assert abs(err_padded - err_plain) <= 0.02 * err_plain, name


def test_padded_qkv_columns_are_never_read():
    plain = random_model(Ops(compute_dtype=torch.float32))
    padded = copy.deepcopy(plain)
    align_gemms_(padded)
    with torch.no_grad():  # garbage in the padding rows of linear_qkv must not reach the output
        for layer in padded.layers:
            lin = layer.attention.linear_qkv
            lin.weight.view(lin.experts, lin.out_features, -1)[:, lin.published[0]:] = 1e3
    seq = tiny_seq()
    for a, b in zip(run(plain, seq), run(padded, seq)):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_meta_model_gets_padded_shapes_and_loads_through_pad_loaded():
    """The loader's order: pad the meta model's shapes first, then pad each published tensor as it
    arrives. The result equals padding a loaded model in place."""
    from happyhorse_core.dit.align import pad_loaded
    from happyhorse_core.weights.checks import assign_tensor
    source = random_model(Ops(compute_dtype=torch.float32))
    published = source.state_dict()
    meta = SandwichDiT(PRESETS["tiny"], Ops(compute_dtype=torch.float32, device="meta"))
    assert align_gemms_(meta) > 0 and all(p.is_meta for p in meta.parameters())
    for key, tensor in published.items():
        owner, _, name = key.rpartition(".")
        assign_tensor(meta, key, pad_loaded(meta.get_submodule(owner), name, tensor.clone()))
    reference = copy.deepcopy(source)
    align_gemms_(reference)
    got, want = dict(meta.named_parameters()), dict(reference.named_parameters())
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert meta.state_dict().keys() == published.keys()
    assert all(torch.equal(meta.state_dict()[k], published[k]) for k in published)
