"""Golden parity of the SandwichDiT against the reference (../shared/golden/dit_case*)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from happyhorse_core.dit.local_attention import local_attention
from oracles import attention_atol, naive_attention
from happyhorse_core.tools.parity import case_inputs, model_from_case, run_case
from happyhorse_core.dit.sequence import pack

pytestmark = pytest.mark.parity
CASES = ["dit_case1", "dit_case2_sr"]


@pytest.fixture(scope="module", params=CASES)
def case(request, golden_dir):
    tensors = load_file(golden_dir / f"{request.param}.safetensors")
    meta = json.loads((golden_dir / f"{request.param}.json").read_text())
    return request.param, tensors, meta, model_from_case(tensors, meta)


def test_packing_matches_reference_exactly(case):
    _, t, _, model = case
    for variant, (video, audio, text) in case_inputs(t).items():
        seq = pack(video, audio, text, style=model.config.coords_style)
        assert torch.equal(seq.padded(), t[f"{variant}.packed.x"])
        assert torch.equal(seq.coords, t[f"{variant}.packed.coords_mapping"])
        assert torch.equal(seq.modality_ids(), t[f"{variant}.packed.modality_mapping"])
        rope = model.adapter.rope(seq.coords)
        torch.testing.assert_close(rope, t[f"{variant}.intermediate.rope"], atol=1e-6, rtol=0)
        adapter = model.adapter(seq.video, seq.audio, seq.text)
        torch.testing.assert_close(adapter, t[f"{variant}.intermediate.adapter_out"], atol=1e-5, rtol=1e-5)


def test_fp32_outputs_and_every_layer(case):
    _, t, meta, model = case
    tol = meta["suggested_tolerances"]["output_fp32"]
    pred = run_case(model, case_inputs(t), torch.float32)
    for name, value in pred.items():
        torch.testing.assert_close(value, t[name], atol=tol["atol"], rtol=tol["rtol"], msg=name)
    model.compute_dtype = torch.float32
    for variant, (video, audio, text) in case_inputs(t).items():
        seq = pack(video, audio, text, style=model.config.coords_style)
        layers: list[torch.Tensor] = []
        with torch.no_grad():
            model(seq.video, seq.audio, seq.text, seq.coords, seq.tokens_per_frame, capture=layers)
        for i, h in enumerate(layers):
            ref = t[f"{variant}.intermediate_fp32.layer{i}_out"]
            assert (h - ref).abs().max().item() < 1e-4, f"{variant} layer {i}"


def test_bf16_faithful_outputs(case):
    _, t, meta, model = case
    tol = meta["suggested_tolerances"]["output_bf16_faithful"]
    pred = run_case(model, case_inputs(t), torch.bfloat16)
    for name, value in pred.items():
        torch.testing.assert_close(value, t[name], atol=tol["atol"], rtol=tol["rtol"], msg=name)
        if name.endswith("x_out"):
            assert (value - t[name]).abs().mean().item() < tol["mean_abs_max"], name
        # bf16 vs our own fp32 path is of the size the reference reports for itself (~0.03-0.04 max)
    fp32 = run_case(model, case_inputs(t), torch.float32)
    gap = max((pred[k.replace("output_fp32", "output")] - v).abs().max().item() for k, v in fp32.items())
    assert 1e-4 < gap < 0.1


def test_local_attention_equals_dense_mask(golden_dir):
    t = load_file(golden_dir / "dit_case2_sr.safetensors")
    mask = t["t2v.packed.local_attn_dense_mask"]  # [N, N] bool
    n, nv, tpf = mask.shape[0], 64, 4
    g = torch.Generator().manual_seed(0)
    q = torch.randn(n, 3, 32, generator=g)
    k, v = torch.randn(n, 1, 32, generator=g), torch.randn(n, 1, 32, generator=g)
    ours = local_attention(q, k, v, num_video=nv, tokens_per_frame=tpf, window=11)
    torch.testing.assert_close(ours, naive_attention(q, k, v, mask), atol=attention_atol(q, k, v), rtol=0)
    # the window really cuts something here (frames 0-3 and 12-15)
    assert not torch.allclose(ours, naive_attention(q, k, v), atol=1e-3)


def test_parity_command_writes_predictions(golden_dir, tmp_path, repo_root):
    out = tmp_path / "pred.safetensors"
    cmd = [sys.executable, "-m", "happyhorse_core.tools.parity", str(golden_dir / "dit_case1.safetensors"),
           str(golden_dir / "dit_case1.json"), "--out", str(out)]
    res = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    pred = load_file(out)
    for v in ("t2v", "i2v"):
        for tag in ("output", "output_fp32"):
            for part in ("x_out", "video", "audio"):
                assert f"{v}.{tag}.{part}" in pred
    assert "max_abs=" in res.stdout


def test_parity_command_fails_on_wrong_weights(golden_dir, tmp_path, repo_root):
    from safetensors.torch import save_file
    t = load_file(golden_dir / "dit_case1.safetensors")
    t["block.layers.3.mlp.down_proj.weight"] = t["block.layers.3.mlp.down_proj.weight"] * 1.5
    bad = tmp_path / "bad.safetensors"
    save_file(t, bad)
    cmd = [sys.executable, "-m", "happyhorse_core.tools.parity", str(bad), str(golden_dir / "dit_case1.json")]
    res = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "FAIL" in res.stdout
