"""Full-size key manifest: our state_dict equals the reference's, key for key (meta device)."""
from __future__ import annotations

import json

import pytest

from happyhorse_core.dit.config import PRESETS, SR1080_LOCAL_LAYERS, VARIANTS
from happyhorse_core.tools.parity import manifest


@pytest.mark.parametrize("name", VARIANTS)
def test_full_size_manifest_matches_reference(name, golden_dir):
    ref = json.loads((golden_dir / "dit_full_manifest.json").read_text())
    ours = manifest(name)
    assert ours["keys"] == ref["keys"]
    assert ours["num_tensors"] == ref["num_tensors"] == 331
    assert ours["num_elements"] == ref["num_elements"]
    assert ours["elements_by_dtype"] == ref["elements_by_dtype"]
    assert ours["derived"] == ref["derived"]


def test_presets_carry_the_spec_numbers():
    d = PRESETS["distill"]
    assert (d.num_layers, d.hidden_size, d.head_dim, d.num_heads_q, d.num_heads_kv) == (40, 5120, 128, 40, 8)
    assert d.qkv_out == 7208 and d.swiglu7_intermediate == 13652 and d.gelu7_intermediate == 20480
    assert d.mm_layers == (0, 1, 2, 3, 36, 37, 38, 39) and d.gelu7_layers == (0, 1, 2, 3)
    assert PRESETS["base"] == d and d.coords_style == "v2"
    assert PRESETS["sr_540p"].coords_style == "v1" and PRESETS["sr_540p"].local_attn_layers == ()
    sr = PRESETS["sr_1080p"]
    assert sr.coords_style == "v1" and sr.local_attn_layers == SR1080_LOCAL_LAYERS
    assert [i for i in range(40) if i not in sr.local_attn_layers] == [3, 7, 11, 15, 19, 23, 27, 31]


def test_manifest_command_prints_json(repo_root):
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "happyhorse_core.tools.parity", "--manifest", "base"], cwd=repo_root,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["num_tensors"] == 331
