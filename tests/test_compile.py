"""The pack's compile path (dit/compile.py, HappyHorse Compile node): on/off, persistent cache,
and compiled == eager on the 1080p-SR structure with no recompile for another clip length."""
from __future__ import annotations

import os

import pytest
import torch

from happyhorse_core.dit import SandwichDiT
from happyhorse_core.dit.compile import CompileOptions, apply_compile, use_cache_dir
from happyhorse_core.dit.config import DiTConfig
from happyhorse_core.dit.ops import Ops
from happyhorse_core.dit.sequence import pack
from happyhorse_core.testing.tiny_dit import init_random_


def model(cfg: DiTConfig) -> SandwichDiT:
    return init_random_(SandwichDiT(cfg, Ops(compute_dtype=torch.float32)), seed=3).eval()


SR_CFG = DiTConfig(num_layers=2, hidden_size=64, head_dim=32, num_heads_kv=1, mm_layers=(), gelu7_layers=(),
                   coords_style="v1", local_attn_layers=(0,), frame_receptive_field=1)


def test_apply_compile_switches_the_blocks_on_and_off(tmp_path):
    m = model(SR_CFG)
    apply_compile(m, None)
    assert not m.compiled
    apply_compile(m, {"mode": "default", "dynamic": True, "cache_dir": None})
    assert m.compiled and all(layer._compiled_call_impl is not None for layer in m.layers)
    apply_compile(m, None)  # reached without the node: eager again
    assert not m.compiled and all(layer._compiled_call_impl is None for layer in m.layers)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="compile mode must be one of"):
        CompileOptions(mode="fastest")


def test_persistent_cache_dir_is_used_unless_the_user_set_one(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", "/somewhere/else")
    applied = use_cache_dir(tmp_path / "cc")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cc" / "inductor")
    assert "TRITON_CACHE_DIR" not in applied and os.environ["TRITON_CACHE_DIR"] == "/somewhere/else"
    assert (tmp_path / "cc").is_dir()


def run(m, frames: int, text_tokens: int):
    g = torch.Generator().manual_seed(frames * 10 + text_tokens)
    seq = pack(torch.randn(1, 48, frames, 2, 4, generator=g), torch.randn(1, 4, 64, generator=g),
               torch.randn(text_tokens, 3584, generator=g), style="v1")
    with torch.no_grad():
        return m(seq.video, seq.audio, seq.text, seq.coords, seq.tokens_per_frame)


@pytest.mark.slow
def test_compiled_sr_blocks_equal_eager_across_clip_lengths():
    """One windowed + one global layer (fp32). The windowed attention runs outside the graph, so a
    new clip length (frames 4 -> 3, other text length) reuses the graphs. Bound: the golden fp32
    tolerance (1e-4); inductor only reorders fp32 sums (~1e-6 measured)."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    eager, compiled = model(SR_CFG), apply_compile(model(SR_CFG), {"mode": "default", "dynamic": True})
    try:
        graphs = []
        for frames, n in ((4, 5), (3, 7), (4, 6)):
            for a, b in zip(run(compiled, frames, n), run(eager, frames, n)):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
            graphs.append(counters["stats"]["unique_graphs"])
        assert graphs[0] == graphs[1] == graphs[2], graphs
    finally:
        torch._dynamo.reset()
