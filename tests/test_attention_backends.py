"""Attention backend choice: `auto` never takes flash-attn (or sage) for fp32 inputs; ComfyUI's
--use-sage-attention / --use-flash-attention become the pack's plain choice in nodes/comfy_bridge."""
from __future__ import annotations

import logging
import types

import pytest
import torch

from happyhorse_core.dit import attention as attn
from nodes import comfy_bridge as cb


@pytest.fixture
def kernels_installed(monkeypatch):
    """Pretend flash-attn and sageattention import (their CUDA kernels are never called here)."""
    monkeypatch.setattr(attn, "_import_first", lambda *names: types.SimpleNamespace())
    real = attn.importlib.import_module
    monkeypatch.setattr(attn.importlib, "import_module",
                        lambda name: types.SimpleNamespace() if name == "sageattention" else real(name))
    attn._warned.clear()


def test_auto_picks_flash_only_for_half_precision_on_cuda(kernels_installed):
    assert attn.resolve_backend("auto", "cuda", torch.bfloat16) == "flash"
    assert attn.resolve_backend("auto", "cuda", torch.float16) == "flash"
    assert attn.resolve_backend("auto", "cuda", torch.float32) == "sdpa"
    assert attn.resolve_backend("auto", "cuda") == "sdpa"  # dtype unknown: never assume half
    assert attn.resolve_backend("auto", "cpu", torch.bfloat16) == "sdpa"


def test_auto_never_picks_sage(kernels_installed):
    assert attn.resolve_backend("auto", "cuda", torch.bfloat16) != "sage"
    assert attn.resolve_backend("sage", "cuda", torch.bfloat16) == "sage"


@pytest.mark.parametrize("backend", ["flash", "sage"])
def test_explicit_kernel_with_fp32_falls_back_with_one_warning(kernels_installed, backend, caplog):
    with caplog.at_level(logging.WARNING, logger="HappyHorse"):
        assert attn.resolve_backend(backend, "cuda", torch.float32) == "sdpa"
        assert attn.resolve_backend(backend, "cuda", torch.float32) == "sdpa"
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "fp16/bf16" in msgs[0] and "SDPA" in msgs[0]


def test_model_resolves_with_its_compute_dtype(kernels_installed, monkeypatch):
    """SandwichDiT.forward passes its compute dtype: an fp32 model asks for SDPA even with 'auto'."""
    seen = []
    real = attn.resolve_backend
    from happyhorse_core.dit import model as model_mod
    monkeypatch.setattr(model_mod, "resolve_backend", lambda *a: seen.append(a) or real(*a))
    from happyhorse_core.testing.tiny_dit import tiny_dit
    from happyhorse_core.dit.sequence import pack
    m = tiny_dit(compute_dtype=torch.float32)
    m.attn_backend = "auto"
    g = torch.Generator().manual_seed(0)
    seq = pack(torch.randn(1, 48, 1, 2, 2, generator=g), torch.randn(1, 2, 64, generator=g),
               torch.randn(3, 3584, generator=g))
    with torch.no_grad():
        m(seq.video, seq.audio, seq.text, seq.coords, seq.tokens_per_frame)
    assert seen and seen[0][2] == torch.float32


@pytest.mark.parametrize("requested, sage, flash, want", [
    ("auto", False, False, "auto"), ("auto", True, False, "sage"), ("auto", False, True, "flash"),
    ("auto", True, True, "sage"), ("sdpa", True, True, "sdpa"), ("flash", True, False, "flash"),
])
def test_comfy_flags_become_a_plain_choice(requested, sage, flash, want):
    assert cb.attention_choice(requested, sage_flag=sage, flash_flag=flash) == want
