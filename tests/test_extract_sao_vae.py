"""extract_sao_vae: the VAE tensors of a (synthetic) stable-audio-open checkpoint, prefix removed, atomically."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from happyhorse_core.tools import extract_sao_vae as ex


def _checkpoint(path, vae_only=False):
    g = torch.Generator().manual_seed(0)
    vae = {"encoder.layers.0.weight": torch.randn(8, 2, 7, generator=g),
           "decoder.layers.1.layers.0.beta": torch.randn(1, 16, 1, generator=g),
           "decoder.layers.2.bias": torch.randn(4, generator=g).to(torch.bfloat16)}
    if vae_only:
        save_file(vae, str(path))
        return vae
    other = {"model.model.transformer.layers.0.weight": torch.randn(4, 4, generator=g),
             "conditioner.conditioners.seconds_total.weight": torch.randn(3, generator=g)}
    save_file({**{ex.PREFIX + k: v for k, v in vae.items()}, **other}, str(path))
    return vae


def test_extracts_only_vae_tensors_without_prefix(tmp_path):
    vae = _checkpoint(tmp_path / "model.safetensors")
    out = ex.extract_sao_vae(tmp_path / "model.safetensors", tmp_path / "vae" / "sao.safetensors")
    with safe_open(str(out), framework="pt") as f:
        assert sorted(f.keys()) == sorted(vae)
        for k, v in vae.items():
            got = f.get_tensor(k)
            assert got.dtype == v.dtype and torch.equal(got, v), k
        assert "extracted" in f.metadata()["happyhorse"]
    assert [p.name for p in out.parent.iterdir()] == ["sao.safetensors"]  # no temp file left


def test_checkpoint_without_the_prefix_is_refused(tmp_path):
    save_file({"model.w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match=r"holds no Stable Audio Open VAE \(no 'pretransform.model.' tensors"):
        ex.extract_sao_vae(tmp_path / "other.safetensors", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_vae_only_file_is_recognised(tmp_path):
    _checkpoint(tmp_path / "vae.safetensors", vae_only=True)
    with pytest.raises(ValueError, match="already looks like a VAE-only file"):
        ex.extract_sao_vae(tmp_path / "vae.safetensors", tmp_path / "out.safetensors")


def test_output_over_input_and_missing_input(tmp_path):
    _checkpoint(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="is the input file"):
        ex.extract_sao_vae(tmp_path / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError):
        ex.extract_sao_vae(tmp_path / "missing.safetensors", tmp_path / "out.safetensors")


def test_failure_midway_leaves_no_output(tmp_path, monkeypatch):
    _checkpoint(tmp_path / "model.safetensors")
    calls = []

    def flaky_read(self, key):
        calls.append(key)
        if len(calls) == 2:
            raise OSError("disk went away")
        with safe_open(str(self.root), framework="pt") as f:
            return f.get_tensor(key)

    monkeypatch.setattr(ex.CheckpointIndex, "read", flaky_read)
    with pytest.raises(OSError):
        ex.extract_sao_vae(tmp_path / "model.safetensors", tmp_path / "out.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_cli(tmp_path, capsys):
    _checkpoint(tmp_path / "model.safetensors")
    assert ex.main([str(tmp_path / "model.safetensors"), str(tmp_path / "sao.safetensors")]) == 0
    assert "3 tensors" in capsys.readouterr().out
    assert ex.main([str(tmp_path / "sao.safetensors"), str(tmp_path / "again.safetensors")]) == 1
    assert "VAE-only" in capsys.readouterr().err
