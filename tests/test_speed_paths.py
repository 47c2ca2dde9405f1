"""The fast paths compute what the plain formulation computes.

* dit/rowwise.py (blockwise fused glue) against the reference forms: ExpertRMSNorm.forward,
  apply_rope, gelu7 / swiglu7, the gate multiply, with tiny cache blocks so that block and
  modality boundaries fall everywhere;
* StepCache / Denoiser reuse of per-prompt constants;
* SandwichDiT.compile_blocks against eager (slow: compiles with inductor on CPU);
* bench/dit_step.py and bench/gpu_check.sh at least run and plan.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from happyhorse_core.dit.config import PRESETS, DiTConfig
from happyhorse_core.dit import SandwichDiT, rowwise
from happyhorse_core.dit.cache import StepCache
from oracles import gelu7, swiglu7
from happyhorse_core.dit.modality import ModalitySplit
from happyhorse_core.dit.ops import ExpertRMSNorm, Ops
from happyhorse_core.sampling.pipeline import Denoiser
from happyhorse_core.dit.rope import apply_rope, apply_rope_
from happyhorse_core.dit.sequence import pack
from happyhorse_core.testing.tiny_dit import init_random_

SPLIT = ModalitySplit(23, 6, 11)  # 40 rows


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few rows, so every function crosses many block and modality boundaries."""
    monkeypatch.setattr(rowwise, "CPU_BLOCK_ELEMENTS", 150)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def norm_module(dim: int, experts: int, seed: int) -> ExpertRMSNorm:
    norm = ExpertRMSNorm(dim, experts)
    with torch.no_grad():
        norm.weight.normal_(0, 0.1, generator=gen(seed))
    return norm


@pytest.mark.parametrize("experts", [1, 3])
def test_rms_norm_and_fused_residual_add_match_the_ops_module(small_blocks, experts):
    norm = norm_module(48, experts, seed=1)
    h = torch.randn(SPLIT.total, 48, generator=gen(2)) * 3
    for dtype in (torch.bfloat16, torch.float32):
        assert torch.equal(rowwise.rms_norm(norm, h, SPLIT, dtype), norm(h, SPLIT).to(dtype))
    delta = torch.randn(SPLIT.total, 48, generator=gen(3)).bfloat16()
    expected_h = h + delta  # the reference's `h + attention(...)` (bf16 delta promoted to fp32)
    got = rowwise.add_rms_norm_(h, delta, norm, SPLIT, torch.bfloat16)
    assert torch.equal(h, expected_h)  # updated in place
    assert torch.equal(got, norm(expected_h, SPLIT).bfloat16())
    before = h.clone()
    assert rowwise.add_(h, delta) is h and torch.equal(h, before + delta)


def test_in_place_rope_equals_rope_with_cat():
    x = torch.randn(19, 5, 32, generator=gen(4))
    table = torch.randn(19, 24, generator=gen(5))
    y = x.clone()
    assert apply_rope_(y, table) is y
    assert torch.equal(y, apply_rope(x, table))
    assert torch.equal(y[..., 24:], x[..., 24:])  # the last quarter of each head is not rotated


def test_qk_norm_rope_matches_reference_composition(small_blocks):
    hq, hkv, dh = 4, 2, 32
    qkvg = (torch.randn(SPLIT.total, (hq + 2 * hkv) * dh + hq, generator=gen(6)) * 2).bfloat16()
    q_norm, k_norm = norm_module(dh, 3, seed=7), norm_module(dh, 3, seed=8)
    table = torch.randn(SPLIT.total, 24, generator=gen(9))
    q, k = rowwise.qk_norm_rope(qkvg, (hq, hkv, dh), q_norm, k_norm, table, SPLIT, torch.bfloat16)
    f = qkvg.float()
    q_ref = apply_rope(q_norm(f[:, :hq * dh].view(-1, hq, dh), SPLIT), table).bfloat16()
    k_ref = apply_rope(k_norm(f[:, hq * dh:(hq + hkv) * dh].view(-1, hkv, dh), SPLIT), table).bfloat16()
    assert torch.equal(q, q_ref) and torch.equal(k, k_ref)


def test_gate_matches_reference(small_blocks):
    out = torch.randn(SPLIT.total, 4, 32, generator=gen(10)).bfloat16()
    gate = (torch.randn(SPLIT.total, 4, generator=gen(11)) * 3).bfloat16()
    ref = (out * torch.sigmoid(gate.float()).unsqueeze(-1)).reshape(SPLIT.total, -1).bfloat16()
    assert torch.equal(rowwise.gate_(out, gate, torch.bfloat16), ref)


def test_activations_match_reference_forms(small_blocks):
    x = torch.randn(SPLIT.total, 2 * 37, generator=gen(12)) * 6  # odd inner width, values beyond the clamps
    x16 = x.bfloat16()
    # bf16 input: the int32 bit-split path. fp32 input: the strided path. Both keep fp32 math.
    torch.testing.assert_close(rowwise.swiglu7_to(x16, torch.float32), swiglu7(x16.float()), atol=0, rtol=2e-7)
    torch.testing.assert_close(rowwise.swiglu7_to(x, torch.float32), swiglu7(x), atol=0, rtol=2e-7)
    torch.testing.assert_close(rowwise.gelu7_to(x16, torch.float32), gelu7(x16.float()), atol=0, rtol=2e-7)
    assert torch.equal(rowwise.swiglu7_to(x16, torch.bfloat16), swiglu7(x16.float()).bfloat16())
    assert torch.equal(rowwise.gelu7_to(x, torch.bfloat16), gelu7(x).bfloat16())


def tiny_model(cfg: DiTConfig | None = None, dtype=torch.float32) -> SandwichDiT:
    return init_random_(SandwichDiT(cfg or PRESETS["tiny"], Ops(compute_dtype=dtype)), seed=3).eval()


def tiny_seq(text_tokens: int = 7, seed: int = 1):
    g = gen(seed)
    return pack(torch.randn(1, 48, 2, 4, 6, generator=g), torch.randn(1, 5, 64, generator=g),
                torch.randn(text_tokens, 3584, generator=g))


def run(model, seq, **kw):
    with torch.no_grad():
        return model(seq.video, seq.audio, seq.text, seq.coords, seq.tokens_per_frame, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_block_size_does_not_change_the_model_output(monkeypatch, dtype):
    model, seq = tiny_model(dtype=dtype), tiny_seq()
    whole = run(model, seq)
    monkeypatch.setattr(rowwise, "CPU_BLOCK_ELEMENTS", 100)  # 1-row blocks in every pass
    small = run(model, seq)
    for a, b in zip(whole, small):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # vectorised-exp tails: ~1 fp32 ulp


def test_step_cache_keys_on_identity_and_version():
    cache, calls = StepCache(max_entries=2), []

    def make(t):
        calls.append(1)
        return t * 2

    a, b = torch.ones(3), torch.ones(3)
    assert torch.equal(cache.get("x", a, make), a * 2) and len(calls) == 1
    cache.get("x", a, make)
    assert len(calls) == 1 and cache.hits == 1
    cache.get("x", b, make)  # equal values, other tensor: recomputed
    assert len(calls) == 2
    a.add_(1)  # in-place change bumps the version: recomputed
    assert torch.equal(cache.get("x", a, make), a * 2) and len(calls) == 3
    assert len(cache) == 2  # bounded


def test_model_cache_gives_same_output_and_skips_the_text_embedder():
    model, seq = tiny_model(), tiny_seq()
    ref = run(model, seq)
    calls = []
    model.adapter.text_embedder.register_forward_hook(lambda *a: calls.append(1))
    cache = StepCache()
    for _ in range(3):
        out = run(model, seq, cache=cache)
        assert all(torch.equal(x, y) for x, y in zip(out, ref))
    assert len(calls) == 1 and cache.misses == 2  # text embedding + RoPE table, once each


def test_denoiser_reuses_prompt_constants_across_steps():
    model = tiny_model()
    calls = []
    model.adapter.text_embedder.register_forward_hook(lambda *a: calls.append(1))
    g = gen(5)
    video, audio = torch.randn(1, 48, 2, 4, 6, generator=g), torch.randn(1, 5, 64, generator=g)
    pos, neg = torch.randn(7, 3584, generator=g), torch.randn(4, 3584, generator=g)
    denoise, reference = Denoiser(model), tiny_model()
    for step in range(2):  # CFG-like alternation of two prompts of different lengths
        for text in (pos, neg):
            v, a = denoise(video + step, audio, text)
            v_ref, a_ref = Denoiser(reference)(video + step, audio, text)  # fresh cache every call
            assert torch.equal(v, v_ref) and torch.equal(a, a_ref)
    assert len(calls) == 2  # one text embedding per prompt over 4 calls


def test_compile_blocks_rejects_unknown_mode():
    with pytest.raises(ValueError, match="compile mode must be one of"):
        tiny_model().compile_blocks(mode="fastest")


@pytest.mark.slow
def test_compiled_blocks_equal_eager_and_do_not_recompile_per_prompt_length():
    """Inductor on CPU, two 3-expert SwiGLU7 layers (one graph kind). Measured on the shared 2-core
    box: 71 s wall / 53 s CPU with a cold inductor cache (load average 5), 19 s warm."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    cfg = DiTConfig(num_layers=2, hidden_size=64, head_dim=32, num_heads_kv=1, mm_layers=(0, 1), gelu7_layers=())
    eager, compiled = tiny_model(cfg), tiny_model(cfg).compile_blocks()
    try:
        graphs = []
        for n in (9, 5, 9, 12):  # positive / negative prompts of other lengths, then a new one
            seq = tiny_seq(text_tokens=n, seed=n)
            for a, b in zip(run(compiled, seq), run(eager, seq)):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
            graphs.append(counters["stats"]["unique_graphs"])
        assert graphs == [1, 1, 1, 1], graphs  # both layers share one graph, whatever the prompt length
    finally:
        torch._dynamo.reset()


def test_dit_step_bench_prints_json_last(repo_root):
    cmd = [sys.executable, "bench/dit_step.py", "--json", "--hidden", "128", "--layers", "4", "--frames", "1",
           "--repeats", "1"]
    res = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"forward_s", "bare_gemm_s", "ratio"} <= set(last)
    assert last["forward_s"] > 0 and last["bare_gemm_s"] > 0
    assert abs(last["ratio"] - last["forward_s"] / last["bare_gemm_s"]) < 0.01


def test_gpu_check_plans_on_cpu_and_refuses_to_run_without_cuda(repo_root):
    py = [sys.executable, "bench/gpu_check.py"]
    res = subprocess.run(py + ["--dry-run"], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout.strip().splitlines()[-1].removeprefix("plan: "))
    assert plan["bf16_weights_gb"] > 25 and plan["base_tokens"] == 3584 + 126 + 256  # 448x256 5 s, 256 text tokens
    assert plan["sr_size"] == "1920x1088" and plan["sr_tokens"] == 32 * 34 * 60 + 126 + 256
    if not torch.cuda.is_available():
        res = subprocess.run(py, cwd=repo_root, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "no CUDA device" in res.stdout
        res = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=repo_root, capture_output=True, text=True,
                             timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
        assert res.returncode == 2 and "no CUDA device" in res.stderr


def test_pipeline_bench_reports_every_stage(repo_root):
    cmd = [sys.executable, "bench/pipeline.py", "--configs", "tiny", "--seconds", "1", "--size", "128x64", "--sr",
           "none", "--json"]
    res = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    tiny = summary["configs"]["tiny"]
    assert len(tiny["sample_step_s"]) == 8 and tiny["decode_s"] > 0 and tiny["decode_one_shot_s"] > 0
    assert summary["text_encode_s"] is None or summary["text_encode_s"] > 0
    assert tiny["mux_s"] is None or tiny["mux_s"] > 0
