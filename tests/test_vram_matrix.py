"""bench/vram_matrix.py: the dry-run plan without CUDA, the whole script on CPU with tiny weights, the README table."""
from __future__ import annotations

import importlib.util
import json

import pytest

pytestmark = pytest.mark.lowvram
KEYS = {"card_gb", "resolution", "seconds", "weight_dtype", "block_swap", "measured", "fit", "peak_vram_gb",
        "peak_rss_gb", "step_s"}


@pytest.fixture(scope="module")
def vm(repo_root):
    spec = importlib.util.spec_from_file_location("bench_vram_matrix", repo_root / "bench" / "vram_matrix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_plans_every_row_unmeasured(vm, capsys):
    assert vm.main(["--dry-run", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert len(rows) == 6 * 3 * 3 * 2
    assert {(r["card_gb"], r["resolution"], r["weight_dtype"], r["block_swap"]) for r in rows} == {
        (c, res, d, s) for c in (12, 16, 24, 32, 48, 80) for res in ("256p", "540p", "1080p")
        for d in ("bf16", "fp8_shared", "fp8_all") for s in ("none", "auto")}
    for r in rows:
        assert KEYS <= set(r) and r["seconds"] == 5 and r["measured"] is False
        assert r["fit"] is r["peak_vram_gb"] is r["peak_rss_gb"] is r["step_s"] is None
    plan = {(r["card_gb"], r["resolution"], r["weight_dtype"], r["block_swap"]): r for r in rows}
    assert plan[(80, "256p", "bf16", "none")]["estimate_fit"]  # 30.6 GB of weights + activations
    assert not plan[(24, "256p", "bf16", "none")]["estimate_fit"]
    assert plan[(16, "256p", "fp8_shared", "auto")]["estimate_fit"]  # the low-VRAM workflow's card


def test_tiny_runs_the_whole_script_on_cpu(vm, tmp_path, capsys):
    out = tmp_path / "vram_matrix_cpu_tiny.json"
    assert vm.main(["--tiny", "--out", str(out), "--cards", "12", "--resolutions", "256p",
                    "--dtypes", "bf16,fp8_all", "--json"]) == 0
    results = json.loads(out.read_text())
    assert results["device"] == "cpu_tiny" and len(results["rows"]) == 4
    for r in results["rows"]:
        assert r["measured"] is True and r["fit"] is True, r
        assert r["peak_rss_gb"] > 0 and r["step_s"] > 0 and r["peak_vram_gb"] is None  # no GPU: no VRAM figure
    assert all(r["blocks_on_device"] >= 0 for r in results["rows"] if r["block_swap"] == "auto")
    text = vm.table({**results, "source": "tiny"})
    assert "12 GB" in text and "measured" in text and "4 of 4 rows measured" in text


def test_table_says_which_rows_are_planned(vm, capsys):
    vm.main(["--dry-run", "--json"])
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    text = vm.table(results)
    assert "0 of 108 rows measured" in text and "planned ~" in text and "measured 0" not in text
    assert vm.gpu_slug("NVIDIA H200") == "h200" and vm.gpu_slug("NVIDIA GeForce RTX 4090") == "rtx_4090"
