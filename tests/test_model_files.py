"""Model files as users have them: symlinks (a Hugging Face cache), one list entry per sharded folder, a
single file next to shards, an encoder-only T5Gemma file with a separate tokenizer folder (nodes/model_files.py,
happyhorse_core/text/loading.py). Pure: no ComfyUI."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from happyhorse_core.weights.loading import load_dit
from pack_import import pack_module
from weight_files import cast_all, save_sharded, tiny_state

mf = pack_module("nodes.model_files")

pytestmark = pytest.mark.weights


def hf_cache(tmp_path: Path, sd: dict, sub: str = "distill") -> Path:
    """A Hugging Face cache as `huggingface-cli download` leaves it: snapshots/<rev>/<sub>/<file> are links to
    blobs/<hash>. Returns the snapshot folder <sub>/."""
    plain = save_sharded(cast_all(sd, torch.float32), tmp_path / "plain" / sub, shards=3)
    repo = tmp_path / "hub" / "models--GAIR--daVinci-MagiHuman"
    snap = repo / "snapshots" / "0123abc" / sub
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for i, f in enumerate(sorted(plain.iterdir())):
        blob = repo / "blobs" / f"{i:040x}"
        shutil.move(str(f), blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    return snap


@pytest.fixture(scope="module")
def sd() -> dict:
    return tiny_state()


@pytest.fixture
def models(tmp_path, sd) -> Path:
    """models/diffusion_models/ with happyhorse/distill -> the cache's snapshot folder, a merged single file
    beside the shards of another (plain) folder, and a lone file."""
    root = tmp_path / "models" / "diffusion_models"
    (root / "happyhorse").mkdir(parents=True)
    (root / "happyhorse" / "distill").symlink_to(hf_cache(tmp_path, sd), target_is_directory=True)
    base = save_sharded(cast_all(sd, torch.bfloat16), root / "happyhorse" / "base", shards=2)
    save_file(cast_all(sd, torch.bfloat16), str(base / "magihuman_base_bf16.safetensors"))
    save_file(cast_all(sd, torch.bfloat16), str(root / "lone.safetensors"))
    return root


def _listing(root: Path) -> list[str]:
    """What ComfyUI's folder_paths lists: every model file under the root, links followed, sorted."""
    names = []
    for dirpath, _, files in os.walk(root, followlinks=True):
        for f in files:
            if f.endswith(".safetensors"):
                names.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(names)


def test_one_entry_per_sharded_folder_and_files_beside_shards_stay(models):
    names = _listing(models)
    assert "happyhorse/distill/model-00001-of-00003.safetensors" in names  # the cache's links are listed
    assert mf.group_sharded(names, [str(models)]) == [
        "happyhorse/base/ (sharded)", "happyhorse/base/magihuman_base_bf16.safetensors", "happyhorse/distill/ (sharded)",
        "lone.safetensors"]


def test_sharded_folder_linked_from_the_hf_cache_loads(models, sd):
    folder = mf.resolve_in_roots("happyhorse/distill/ (sharded)", [str(models)], "diffusion_models")
    assert folder == str(models / "happyhorse" / "distill")  # the link path, not the snapshot's realpath
    model = load_dit(folder, variant="distill", weight_dtype="bf16")
    assert "3 shards" in model.load_report.layout
    key = next(k for k in sd if k.endswith("linear_qkv.weight"))
    assert torch.equal(model.state_dict()[key], sd[key].to(model.state_dict()[key].dtype))


def test_a_picked_shard_stands_for_the_link_folder_not_the_blob(models):
    shard = mf.resolve_in_roots("happyhorse/distill/model-00002-of-00003.safetensors", [str(models)])
    assert os.path.realpath(shard).endswith(os.path.join("blobs", f"{1:040x}"))  # in the cache: a blob
    assert mf.checkpoint_target(shard) == str(models / "happyhorse" / "distill")


def test_a_single_file_next_to_shards_loads_itself(models, sd):
    merged = mf.resolve_in_roots("happyhorse/base/magihuman_base_bf16.safetensors", [str(models)])
    assert mf.checkpoint_target(merged) == merged
    assert load_dit(merged, variant="base").load_report.layout.startswith("single file")
    shard = mf.resolve_in_roots("happyhorse/base/model-00001-of-00002.safetensors", [str(models)])
    assert mf.checkpoint_target(shard) == str(models / "happyhorse" / "base")


@pytest.mark.badinput
def test_broken_index_lists_the_files_and_the_loader_names_the_index(models):
    (models / "happyhorse" / "base" / "model.safetensors.index.json").write_text("{not json")
    names = mf.group_sharded(_listing(models), [str(models)])
    assert "happyhorse/base/model-00001-of-00002.safetensors" in names


@pytest.mark.badinput
def test_sharded_entry_for_a_missing_folder(models):
    with pytest.raises(FileNotFoundError, match=r"\(folder\) not found"):
        mf.resolve_in_roots("happyhorse/1080p_sr/ (sharded)", [str(models)], "diffusion_models")


def test_index_shards_reads_the_weight_map(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "x.safetensors"}}))
    assert mf.index_shards(str(tmp_path)) == {"x.safetensors"}
    assert mf.index_shards(str(tmp_path / "nowhere")) is None


# -- T5Gemma: an encoder-only single file plus a tokenizer folder ---------------------------------------------
def _same_encoder(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_encoder_only_file_with_a_tokenizer_folder_beside_it(tmp_path):
    from happyhorse_core.testing.tiny_text import write_tiny_text_folder
    from happyhorse_core.text.loading import load_text_stack, tokenizer_folder_for
    from happyhorse_core.tools.extract_t5gemma_encoder import main as extract_main

    root = tmp_path / "text_encoders"
    repo = root / "t5gemma-9b-9b-ul2"
    repo.mkdir(parents=True)
    write_tiny_text_folder(repo)
    full_encoder, full_tok = load_text_stack(repo)
    single = root / "t5gemma_9b_encoder_bf16.safetensors"
    assert extract_main([str(repo), str(single)]) == 0
    (repo / "model.safetensors").unlink()  # the user keeps only the small files of the repo folder
    assert tokenizer_folder_for(single) == repo
    assert mf.checkpoint_target(str(single)) == str(single)
    encoder, tok = load_text_stack(single)
    _same_encoder(encoder, full_encoder)
    assert tok.encode("Hello there") == full_tok.encode("Hello there")


def test_encoder_only_file_inside_the_sharded_repo_folder_loads_itself(tmp_path):
    from happyhorse_core.testing.tiny_text import write_tiny_text_folder
    from happyhorse_core.text.loading import load_text_stack
    from happyhorse_core.tools.extract_t5gemma_encoder import extract_encoder
    from safetensors.torch import load_file

    repo = tmp_path / "t5gemma-9b-9b-ul2"
    repo.mkdir()
    write_tiny_text_folder(repo)
    full, _ = load_text_stack(repo)
    tensors = load_file(str(repo / "model.safetensors"))
    (repo / "model.safetensors").unlink()
    save_sharded(tensors, repo, shards=2)
    single = extract_encoder(repo, repo / "encoder_bf16.safetensors")
    assert mf.checkpoint_target(str(single)) == str(single)  # the index does not name it
    assert mf.checkpoint_target(str(repo / "model-00001-of-00002.safetensors")) == str(repo)
    encoder, _ = load_text_stack(single)
    _same_encoder(encoder, full)


@pytest.mark.badinput
def test_encoder_only_file_without_any_tokenizer_says_where_to_put_it(tmp_path):
    from happyhorse_core.text.loading import load_text_stack
    single = tmp_path / "encoder.safetensors"
    save_file({"model.encoder.x": torch.zeros(1)}, str(single))
    with pytest.raises(FileNotFoundError, match="no tokenizer for encoder.safetensors.*beside it"):
        load_text_stack(single)
