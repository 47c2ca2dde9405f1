"""The loader tooltips quote the GPU-byte figures that bench/memory.py computes from the real shapes."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _measure() -> dict:
    spec = importlib.util.spec_from_file_location("bench_memory", REPO / "bench" / "memory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.measure()


def _gb(x: int) -> str:
    return f"{x / 1e9:.1f} GB"


def test_loader_tooltips_match_bench_memory():
    m = _measure()
    text = re.sub(r'"\s*\n\s*"', "", (REPO / "nodes" / "loader_nodes.py").read_text())  # join split literals
    resident = {n: m["blockswap_resident_bytes"][str(n)] - m["non_block_bytes"] for n in (10, 20)}
    expected = [f"bf16 = {_gb(m['bf16_bytes'])}", f"shared layers = {_gb(m['fp8_shared_bytes'])}",
                f"all layers = {_gb(m['fp8_all_bytes'])}", f"20 = {_gb(resident[20])} resident",
                f"10 = {_gb(resident[10])} resident", f"no swapping ({_gb(m['bf16_bytes'])})",
                f"sandwich blocks {m['largest_block_bytes'] / 1e9:.2f}"]
    for phrase in expected:
        assert phrase in text, f"loader tooltips should say {phrase!r} (bench/memory.py)"
    assert "21.9 GB" in text and "10.9 GB resident" in text  # the figures the README quotes
