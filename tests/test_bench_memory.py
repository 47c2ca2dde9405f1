"""bench/memory.py meets the memory targets; bench/gpu_memory.py parses and fails fast without CUDA."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

pytestmark = pytest.mark.weights


def load_script(repo_root, name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", repo_root / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_memory_targets(repo_root, capsys):
    memory = load_script(repo_root, "memory")
    assert memory.main(["--json"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    bf16 = m["bf16_bytes"]
    assert 30.5e9 < bf16 < 30.8e9  # MODEL_SPEC §1.1: bf16 size ~ 30.6 GB
    assert m["fp8_shared_bytes"] <= 0.72 * bf16
    assert m["fp8_all_bytes"] <= 0.51 * bf16
    blocks = m["block_bytes"]
    for n in ("0", "10", "20", "40"):
        assert m["blockswap_resident_bytes"][n] - m["non_block_bytes"] <= (int(n) + 1) / 40 * blocks
        assert m["blockswap_bytes"][n] >= m["blockswap_resident_bytes"][n]
    assert m["blockswap_bytes"]["40"] == bf16
    assert 9.0e9 < m["t5gemma_encoder_params"] < 9.5e9


def test_gpu_memory_script_plans_and_refuses_without_cuda(repo_root, capsys):
    gpu = load_script(repo_root, "gpu_memory")
    assert gpu.geometry(5, 448, 256, 640)["video_tokens"] == 3584  # 32 x (16/2) x (28/2)
    assert gpu.main(["--dry-run", "--json", "--modes", "bf16,swap20"]) == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert plan["geometry"]["tokens"] == 3584 + 126 + 640
    assert [r["mode"] for r in plan["runs"]] == ["bf16", "swap20"]
    with pytest.raises(SystemExit):
        gpu.main(["--modes", "bf16,int4"])
    if not torch.cuda.is_available():
        assert gpu.main(["--modes", "bf16"]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err
