"""Bad weights files: each one a clear error naming the file and what to do, never a silent load."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from happyhorse_core.dit.config import PRESETS
from happyhorse_core.errors import CheckpointError
from happyhorse_core.weights.loading import load_dit
from weight_files import save_sharded, tiny_state, to_fp8, to_split_experts

pytestmark = [pytest.mark.weights, pytest.mark.badinput]


@pytest.fixture(scope="module")
def sd():
    return tiny_state(PRESETS["tiny"])


@pytest.fixture
def good_file(tmp_path, sd):
    path = tmp_path / "dit.safetensors"
    save_file(sd, path)
    return path


def load(path, **kw):
    return load_dit(path, variant=kw.pop("variant", "distill"), **kw)


def test_zero_byte_file(tmp_path):
    (tmp_path / "dit.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"dit\.safetensors is empty \(0 bytes\).*download it again"):
        load(tmp_path / "dit.safetensors")


def test_truncated_file(tmp_path, good_file):
    data = good_file.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors is truncated: .* declares \d+ bytes .* only \d+"):
        load(cut)


@pytest.mark.parametrize("damage", ["json", "length"])
def test_corrupted_header(tmp_path, good_file, damage):
    data = bytearray(good_file.read_bytes())
    if damage == "json":
        data[8:20] = b"#" * 12
    else:
        data[:8] = struct.pack("<Q", 1 << 40)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"bad\.safetensors has a corrupted safetensors header"):
        load(bad)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth"])
def test_pickle_files_are_refused_without_unpickling(tmp_path, suffix):
    path = tmp_path / f"dit{suffix}"
    path.write_bytes(b"\x80\x04\x95 this would run code if unpickled")
    with pytest.raises(CheckpointError, match=rf"dit\{suffix} is a pickle checkpoint.*never unpickles.*safetensors"):
        load(path)


def test_pickle_renamed_to_safetensors(tmp_path):
    (tmp_path / "dit.safetensors").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(CheckpointError, match="pickle/zip checkpoint with a .safetensors name"):
        load(tmp_path / "dit.safetensors")


def test_header_length_that_looks_like_a_pickle_opcode_is_still_safetensors(tmp_path):
    """A header of 0x0580 bytes starts the file with 80 05, the pickle protocol-5 opcode: still safetensors."""
    from happyhorse_core.weights.safetensors_header import read_header
    path = tmp_path / "shard.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (0x0580 - len(header))
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    assert path.read_bytes()[:2] == b"\x80\x05"
    entries, _ = read_header(path)
    assert list(entries) == ["w"] and entries["w"].shape == (2,)


def test_git_lfs_pointer(tmp_path):
    (tmp_path / "dit.safetensors").write_text("version https://git-lfs.github.com/spec/v1\n"
                                              "oid sha256:0123\nsize 30640000000\n")
    with pytest.raises(CheckpointError, match=r"git-lfs pointer.*not downloaded.*git lfs pull"):
        load(tmp_path / "dit.safetensors")


def test_index_names_a_missing_shard(tmp_path, sd):
    folder = save_sharded(sd, tmp_path / "ckpt", shards=3)
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"shard model-00002-of-00003\.safetensors .* is missing"):
        load(folder)


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights not found"):
        load(tmp_path / "nope.safetensors")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "dit.ckpt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"no \.safetensors weights in .*empty.*dit\.ckpt"):
        load(tmp_path / "empty")


@pytest.mark.parametrize("keys,what", [
    (["blocks.0.self_attn.q.weight", "blocks.0.cross_attn.k.weight", "patch_embedding.weight"], "Wan 2.x"),
    (["transformer_blocks.0.attn1.to_q.weight", "adaln_single.linear.weight"], "LTX-Video"),
    (["model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.out.2.weight"], "Stable Diffusion UNet"),
    (["encoder.layers.0.self_attn.q_proj.weight"], "text encoder")])
def test_other_models_are_named(tmp_path, keys, what):
    save_file({k: torch.zeros(2, 2) for k in keys}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match=rf"not a HappyHorse/MagiHuman DiT \(looks like .*{what}"):
        load(tmp_path / "other.safetensors")


def test_missing_and_unexpected_keys_are_listed_with_the_layout(tmp_path, sd):
    broken = dict(sd)
    del broken["block.layers.3.mlp.down_proj.weight"], broken["final_norm_audio.weight"]
    broken["block.layers.3.mlp.extra.weight"] = torch.zeros(2)
    save_file({"model." + k: v for k, v in broken.items()}, tmp_path / "dit.safetensors")
    with pytest.raises(CheckpointError) as e:
        load(tmp_path / "dit.safetensors")
    msg = str(e.value)
    assert "2 missing key(s)" in msg and "block.layers.3.mlp.down_proj.weight" in msg
    assert "1 unexpected key(s)" in msg and "model.block.layers.3.mlp.extra.weight" in msg
    assert "Detected layout: single file, key prefix 'model.', official keys" in msg


def test_rope_bands_may_be_absent(tmp_path, sd):
    save_file({k: v for k, v in sd.items() if k != "adapter.rope.bands"}, tmp_path / "dit.safetensors")
    model = load(tmp_path / "dit.safetensors")
    assert torch.equal(model.adapter.rope.bands, sd["adapter.rope.bands"])


def test_missing_layer_and_wrong_shape(tmp_path, sd):
    no_layer = {k: v for k, v in sd.items() if not k.startswith("block.layers.5.")}
    save_file(no_layer, tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match=r"transformer layers \[5\] are missing"):
        load(tmp_path / "a.safetensors")
    wrong = dict(sd)
    wrong["block.layers.4.attention.linear_proj.weight"] = torch.zeros(128, 96, dtype=torch.bfloat16)
    save_file(wrong, tmp_path / "b.safetensors")
    with pytest.raises(CheckpointError, match=r"wrong shape.*layers\.4\.attention\.linear_proj\.weight \[128, 96\] "
                                              r"\(expected \[128, 128\]\)"):
        load(tmp_path / "b.safetensors")


def test_fp8_file_with_some_scales_missing(tmp_path, sd):
    file_sd, _ = to_fp8(sd, "sdd")
    del file_sd["block.layers.2.mlp.up_gate_proj.weight.__fp8_scale"]
    save_file(file_sd, tmp_path / "dit.safetensors")
    with pytest.raises(CheckpointError, match=r"fp8 tensor 'block\.layers\.2\.mlp\.up_gate_proj\.weight' has no scale"):
        load(tmp_path / "dit.safetensors")


def test_split_expert_file_missing_one_expert(tmp_path, sd):
    split = to_split_experts(sd, PRESETS["tiny"])
    del split["block.layers.6.attention.linear_k_audio.weight"]
    save_file(split, tmp_path / "dit.safetensors")
    with pytest.raises(CheckpointError, match=r"1 missing key.*linear_k_audio.*Wan2GP split-expert keys"):
        load(tmp_path / "dit.safetensors")


def test_variant_required_when_the_name_gives_no_clue(good_file):
    with pytest.raises(ValueError, match=r"cannot tell which DiT variant dit\.safetensors is.*choose it explicitly"):
        load_dit(good_file)
    with pytest.raises(ValueError, match="unknown DiT variant 'turbo'"):
        load_dit(good_file, variant="turbo")


def test_bare_sr_name_is_ambiguous(tmp_path, sd):
    save_file(sd, tmp_path / "hh_sr_bf16.safetensors")
    with pytest.raises(ValueError, match=r"sr_540p or sr_1080p.*choose the variant explicitly"):
        load_dit(tmp_path / "hh_sr_bf16.safetensors")


def test_bad_options(good_file):
    with pytest.raises(ValueError, match="weight dtype must be one of"):
        load(good_file, weight_dtype="int4")
    with pytest.raises(ValueError, match="fp8 scope must be one of"):
        load(good_file, weight_dtype="fp8_e4m3fn", fp8_scope="middle")


def test_multiple_files_without_index(tmp_path, sd):
    (tmp_path / "ckpt").mkdir()
    save_file(sd, tmp_path / "ckpt" / "a.safetensors")
    save_file(sd, tmp_path / "ckpt" / "b.safetensors")
    with pytest.raises(CheckpointError, match=r"holds 2 \.safetensors files but no model\.safetensors\.index\.json"):
        load(tmp_path / "ckpt")


def test_index_that_is_not_json(tmp_path, sd):
    folder = save_sharded(sd, tmp_path / "ckpt", shards=2)
    (folder / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json is not a valid safetensors index"):
        load(folder)
    stale = {"weight_map": {"x": "model-00001-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(stale))
    with pytest.raises(CheckpointError, match="not in the shard it names"):
        load(folder)
