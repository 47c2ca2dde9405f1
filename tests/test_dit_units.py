"""Unit checks of the DiT building blocks on tiny configs (CPU, fp32 unless said)."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from happyhorse_core.dit import attention as attn
from happyhorse_core.dit.config import PRESETS, DiTConfig
from happyhorse_core.dit import SandwichDiT
from oracles import attention_atol, gelu7, naive_attention, swiglu7
from happyhorse_core.dit.ops import Ops
from happyhorse_core.dit.sequence import pack


def tiny_model(seed: int = 0, cfg: DiTConfig | None = None) -> SandwichDiT:
    model = SandwichDiT(cfg or PRESETS["tiny"], Ops(compute_dtype=torch.float32))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = 0.1 if p.ndim == 1 else p.shape[1] ** -0.5
            p.copy_((torch.randn(p.shape, generator=g) * std).to(p.dtype))
    return model.eval()


def tiny_inputs(seed: int = 1, text_width: int = 3584):
    g = torch.Generator().manual_seed(seed)
    return pack(torch.randn(1, 48, 2, 4, 6, generator=g), torch.randn(1, 5, 64, generator=g),
                torch.randn(7, text_width, generator=g))


def run(model, seq):
    with torch.no_grad():
        return model(seq.video, seq.audio, seq.text, seq.coords, seq.tokens_per_frame)


def test_state_dict_uses_reference_key_names():
    keys = set(tiny_model().state_dict())
    assert "adapter.rope.bands" in keys and "final_linear_audio.weight" in keys
    assert "block.layers.0.attention.linear_qkv.weight" in keys
    assert "block.layers.7.mlp.up_gate_proj.weight" in keys
    assert all(k.startswith(("adapter.", "block.layers.", "final_")) for k in keys)


@pytest.mark.parametrize("modality", [0, 1, 2])
def test_expert_swap_changes_only_that_modality_in_a_sandwich_layer(modality):
    """Perturb one expert's rows in the LAST sandwich layer: only that modality's output moves."""
    model, seq = tiny_model(), tiny_inputs()
    v0, a0 = run(model, seq)
    layer = model.layers[7].mlp.down_proj  # 3 experts
    n = layer.out_features
    with torch.no_grad():
        layer.weight[modality * n:(modality + 1) * n] *= 3.0
    v1, a1 = run(model, seq)
    changed = {0: not torch.allclose(v0, v1), 1: not torch.allclose(a0, a1)}
    if modality == 2:  # text rows have no output head
        assert changed == {0: False, 1: False}
    else:
        assert changed[modality] and not changed[1 - modality]


def test_activations():
    x = torch.tensor([-10.0, -1.0, 0.0, 1.0, 7.0, 20.0])
    c = x.clamp(max=7)
    torch.testing.assert_close(gelu7(x), c * torch.sigmoid(1.702 * c))
    pair = torch.tensor([[20.0, -20.0, 1.0, 2.0]])  # (a, b) interleaved
    a, b = torch.tensor([7.0, 1.0]), torch.tensor([-7.0, 2.0])
    torch.testing.assert_close(swiglu7(pair)[0], a * torch.sigmoid(1.702 * a) * (b + 1))


def test_sdpa_equals_naive_attention_with_gqa():
    g = torch.Generator().manual_seed(3)
    q, k, v = torch.randn(19, 4, 32, generator=g), torch.randn(19, 2, 32, generator=g), torch.randn(19, 2, 32, generator=g)
    torch.testing.assert_close(attn.attention(q, k, v, "sdpa"), naive_attention(q, k, v), atol=attention_atol(q, k, v),
                               rtol=0)
    out_bf16 = attn.attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), "sdpa")
    assert out_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(out_bf16.float(), naive_attention(q.bfloat16(), k.bfloat16(), v.bfloat16()).float(),
                               atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("backend", ["flash", "sage"])
def test_unavailable_backend_falls_back_to_sdpa_with_one_warning(backend, caplog):
    attn._warned.clear()
    with caplog.at_level(logging.WARNING, logger="HappyHorse"):
        assert attn.resolve_backend(backend, "cpu") == "sdpa"
        assert attn.resolve_backend(backend, "cpu") == "sdpa"
    msgs = [r.getMessage() for r in caplog.records if backend in r.getMessage()]
    assert len(msgs) == 1 and "SDPA" in msgs[0]
    model = tiny_model()
    model.attn_backend = backend
    ref = tiny_model()
    torch.testing.assert_close(run(model, tiny_inputs())[0], run(ref, tiny_inputs())[0])


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="choose one of"):
        attn.resolve_backend("xformers")


def test_bf16_path_is_close_to_fp32_path():
    model, seq = tiny_model(), tiny_inputs()
    v32, _ = run(model, seq)
    model.compute_dtype = torch.bfloat16
    v16, _ = run(model, seq)
    assert v16.dtype == torch.float32
    rel = (v16 - v32).norm() / v32.norm()
    assert 0 < rel.item() < 0.05


def test_local_layers_differ_from_global_only_beyond_the_window():
    cfg = PRESETS["tiny"].replace(local_attn_layers=(2, 3), frame_receptive_field=1)
    local, glob = tiny_model(cfg=cfg), tiny_model()
    g = torch.Generator().manual_seed(5)
    seq = pack(torch.randn(1, 48, 4, 2, 2, generator=g), torch.randn(1, 5, 64, generator=g), torch.randn(3, 3584, generator=g))
    assert not torch.allclose(run(local, seq)[0], run(glob, seq)[0])
    wide = tiny_model(cfg=cfg.replace(frame_receptive_field=11))  # window covers all 4 frames
    torch.testing.assert_close(run(wide, seq)[0], run(glob, seq)[0], atol=1e-5, rtol=1e-5)


def test_device_bytes_counts_all_weights():
    model = tiny_model()
    total = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    assert model.device_bytes() == {"cpu": total}


def test_config_validation_messages():
    with pytest.raises(ValueError, match="not a multiple of head_dim"):
        DiTConfig(hidden_size=100, head_dim=32)
    with pytest.raises(ValueError, match="outside 0..7"):
        PRESETS["tiny"].replace(mm_layers=(0, 9))


def test_core_imports_without_comfyui(repo_root):
    code = ("import sys, pkgutil, importlib, happyhorse_core\n"
            "for m in pkgutil.walk_packages(happyhorse_core.__path__, 'happyhorse_core.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'server', 'nodes')]\n"
            "assert not bad, bad\nprint('ok', len(sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
