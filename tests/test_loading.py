"""Every accepted DiT layout, written from a tiny random model, loads to identical parameters."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from happyhorse_core.dit.config import PRESETS, SR1080_LOCAL_LAYERS, VARIANTS, DiTConfig
from happyhorse_core.dit import SandwichDiT
from happyhorse_core.weights.layouts import strip_prefix
from happyhorse_core.weights.loading import load_dit
from happyhorse_core.weights.safetensors_io import open_checkpoint
from happyhorse_core.dit.ops import Ops
from happyhorse_core.dit.sequence import pack
from happyhorse_core.weights.variants import apply_variant, infer_config, sr1080_local_layers, variant_from_name
from weight_files import (cast_all, is_linear, keep_fp32, save_sharded, tiny_state, to_fp8, to_quanto_int8,
                          to_split_experts, with_prefix)

pytestmark = pytest.mark.weights
TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def sd():
    return tiny_state(TINY)


def expected_from_file(file_sd: dict) -> dict:
    """What the loader must build from canonical-named float tensors: linears bf16, the rest fp32."""
    return {k: v.to(torch.float32 if keep_fp32(k) else torch.bfloat16) for k, v in file_sd.items()}


def assert_params(model: SandwichDiT, expected: dict) -> None:
    got = {k: v for k, v in model.state_dict().items() if not k.endswith("weight_scale")}
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype, k
        assert torch.equal(got[k].view(torch.uint8) if got[k].dtype.itemsize == 1 else got[k],
                           v.view(torch.uint8) if v.dtype.itemsize == 1 else v), k


# -- plain float layouts ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
def test_single_file_any_float_dtype(tmp_path, sd, dtype):
    file_sd = cast_all(sd, dtype)
    save_file(file_sd, tmp_path / "dit.safetensors")
    model = load_dit(tmp_path / "dit.safetensors", variant="distill")
    assert model.config == TINY
    assert_params(model, expected_from_file(file_sd))
    if dtype == torch.float32:  # an fp32 file holds exactly the original bf16 / fp32 values
        assert_params(model, sd)


@pytest.mark.parametrize("prefix", ["model.", "module.", "diffusion_model.", "model.diffusion_model.", "dit."])
def test_wrapper_prefixes_are_stripped(tmp_path, sd, prefix):
    save_file(with_prefix(sd, prefix), tmp_path / "dit.safetensors")
    model = load_dit(tmp_path / "dit.safetensors", variant="distill")
    assert_params(model, sd)
    assert repr(prefix) in model.load_report.layout


def test_hf_sharded_folder_and_index_file(tmp_path, sd):
    folder = save_sharded(cast_all(sd, torch.float32), tmp_path / "ckpt", shards=3)
    for target in (folder, folder / "model.safetensors.index.json"):
        model = load_dit(target, variant="distill")
        assert_params(model, sd)
    assert "3 shards" in model.load_report.layout


def test_folder_with_single_model_safetensors(tmp_path, sd):
    (tmp_path / "ckpt").mkdir()
    save_file(sd, tmp_path / "ckpt" / "model.safetensors")
    assert_params(load_dit(tmp_path / "ckpt", variant="distill"), sd)


def test_diffusers_folder(tmp_path, sd):
    root = tmp_path / "umbrella"
    save_sharded(sd, root / "transformer", shards=2, stem="diffusion_pytorch_model")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "MagiHumanPipeline"}))
    model = load_dit(root, variant="distill")
    assert_params(model, sd)
    assert "diffusers" in model.load_report.layout
    assert_params(load_dit(root / "transformer", variant="distill"), sd)


# -- third-party schemas --------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [TINY, DiTConfig(num_layers=6, hidden_size=64, head_dim=16, num_heads_kv=1,
                                                  mm_layers=(0, 5), gelu7_layers=(0,), enable_attn_gating=False)],
                         ids=["gated", "ungated"])
def test_wan2gp_split_experts(tmp_path, cfg):
    sd = tiny_state(cfg, seed=3)
    split = to_split_experts(sd, cfg)
    assert "block.layers.0.attention.linear_q_video.weight" in split
    assert "block.layers.2.attention.linear_k.weight" in split
    save_file(split, tmp_path / "magi_human_bf16.safetensors")
    model = load_dit(tmp_path / "magi_human_bf16.safetensors", variant="distill")
    assert model.config == cfg
    assert_params(model, sd)
    assert "Wan2GP split-expert" in model.load_report.layout


def test_wan2gp_quanto_int8_is_dequantized(tmp_path, sd):
    file_sd, deq = to_quanto_int8(to_split_experts(sd, TINY))
    save_file(file_sd, tmp_path / "magi_human_quanto_bf16_int8.safetensors")
    model = load_dit(tmp_path / "magi_human_quanto_bf16_int8.safetensors", variant="distill")
    merged = load_dit_reference_split(deq, sd)
    assert_params(model, merged)
    assert "quanto int8" in model.load_report.layout


def load_dit_reference_split(deq: dict, sd: dict) -> dict:
    """Canonical expectation for a split-expert quanto file: re-fuse the dequantized parts."""
    cfg = TINY
    out = dict(sd)
    for key in sd:
        if not is_linear(key):
            continue
        layer = int(key.split(".")[2])
        mods = ["_video", "_audio", "_text"] if layer in cfg.mm_layers else [""]
        base = key[:-len(".weight")]
        if key.endswith("linear_qkv.weight"):
            stem = base[:-len("linear_qkv")]
            out[key] = torch.cat([deq[f"{stem}linear_{p}{m}.weight"] for m in mods for p in "qkvg"])
        else:
            out[key] = torch.cat([deq[f"{base}{m}.weight"] for m in mods])
    return out


@pytest.mark.parametrize("naming,prefix", [("sdd", ""), ("comfy", "model.diffusion_model."), ("ours", ""),
                                           (None, "")])
def test_fp8_files_dequantize_to_bf16_and_keep_bytes_as_fp8(tmp_path, sd, naming, prefix):
    file_sd, quant = to_fp8(sd, naming)
    if prefix:
        file_sd = {(k if k == "scaled_fp8" else prefix + k): v for k, v in file_sd.items()}
    save_sharded(file_sd, tmp_path / "ckpt", shards=2)
    as_bf16 = load_dit(tmp_path / "ckpt", variant="distill")
    expect = dict(sd)
    for k, (q, s) in quant.items():
        expect[k] = (q.float() * s).to(torch.bfloat16) if s is not None else q.to(torch.bfloat16)
    assert_params(as_bf16, expect)
    as_fp8 = load_dit(tmp_path / "ckpt", variant="distill", weight_dtype="fp8_e4m3fn_scaled", fp8_scope="all")
    state = as_fp8.state_dict()
    for k, (q, s) in quant.items():
        assert torch.equal(state[k].view(torch.uint8), q.view(torch.uint8)), k
        assert torch.equal(state[k[:-len("weight")] + "weight_scale"], s if s is not None else torch.ones(())), k
    if naming == "sdd":  # plain fp8_e4m3fn asked of a scaled file keeps the scales
        plain = load_dit(tmp_path / "ckpt", variant="distill", weight_dtype="fp8_e4m3fn", fp8_scope="all")
        assert plain.load_report.weight_dtype == "fp8_e4m3fn_scaled"


# -- architecture and variant ---------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_full_size_shapes_infer_the_presets(variant):
    shapes = {k: tuple(v.shape) for k, v in SandwichDiT(PRESETS["base"], Ops(device="meta")).state_dict().items()}
    cfg = apply_variant(infer_config(shapes), variant)
    assert cfg == PRESETS[variant]


def test_sr1080_rule():
    assert sr1080_local_layers(40) == SR1080_LOCAL_LAYERS
    assert sr1080_local_layers(10) == PRESETS["tiny_sr"].local_attn_layers  # <= 11 layers: every 4th global
    assert sr1080_local_layers(16) == tuple(i for i in range(16) if i not in (3, 7))


@pytest.mark.parametrize("path,variant", [
    ("GAIR/daVinci-MagiHuman/distill/model.safetensors.index.json", "distill"),
    ("hub/1080p_sr", "sr_1080p"), ("FastVideo/MagiHuman-Diffusers/sr_540p/transformer", "sr_540p"),
    ("models/diffusion_models/distill-merger_bf16.safetensors", "distill"),
    ("models/diffusion_models/540p_sr_merge_bf16.safetensors", "sr_540p"),
    ("ckpts/magi_human_sr1080_bf16.safetensors", "sr_1080p"), ("SanDiegoDude/base_fp8", "base"),
    ("models/diffusion_models/magi_human_bf16.safetensors", None), ("database/dit.safetensors", None)])
def test_variant_from_name(path, variant):
    assert variant_from_name(Path(path)) == variant


def test_variant_sets_coords_and_local_layers(tmp_path, sd):
    save_file(sd, tmp_path / "hh_1080p.safetensors")
    model = load_dit(tmp_path / "hh_1080p.safetensors")
    assert model.load_report.variant == "sr_1080p"
    assert model.config.coords_style == "v1" and model.config.local_attn_layers == sr1080_local_layers(8)
    model = load_dit(tmp_path / "hh_1080p.safetensors", variant="distill")  # explicit wins
    assert model.config == TINY


def test_loaded_model_runs_like_the_original(tmp_path, sd):
    ref = SandwichDiT(TINY, Ops(device="meta"))
    ref.load_state_dict(sd, assign=True)
    save_file(with_prefix(cast_all(sd, torch.float32), "module."), tmp_path / "dit.safetensors")
    model = load_dit(tmp_path / "dit.safetensors", variant="distill")
    g = torch.Generator().manual_seed(1)
    seq = pack(torch.randn(1, 48, 2, 4, 6, generator=g), torch.randn(1, 5, 64, generator=g),
               torch.randn(7, 3584, generator=g))
    with torch.no_grad():
        a = ref.eval()(seq.video, seq.audio, seq.text, seq.coords, seq.tokens_per_frame)
        b = model(seq.video, seq.audio, seq.text, seq.coords, seq.tokens_per_frame)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_checkpoint_index_helpers(tmp_path, sd):
    save_sharded(with_prefix(sd, "model."), tmp_path / "enc", shards=2)
    ckpt = open_checkpoint(tmp_path / "enc")
    key = "model.block.layers.0.attention.linear_qkv.weight"
    assert ckpt.entries[key].shape == tuple(sd[key[6:]].shape) and ckpt.entries[key].dtype == "BF16"
    assert torch.equal(ckpt.read(key), sd[key[6:]])
    some = open_checkpoint(tmp_path / "enc", wanted=lambda k: ".layers.0.attention." in k)
    assert set(some.keys()) == {"model." + k for k in sd if k.startswith("block.layers.0.attention.")}
    assert strip_prefix(list(ckpt.keys()), ("model.encoder.", "model.")) == "model."
