"""Weight bytes on the compute device for the full-size model, computed on the meta device.

    python bench/memory.py [--json]

Nothing is allocated: the real 40-layer, 5120-wide DiT is built on the meta device with each
storage policy and its parameter/buffer bytes are summed (norms, embedders, heads stay fp32 in
every policy). Block swap N reports the blocks kept resident plus the peak during a run (one
swapped block in flight; the largest is a sandwich block). The T5Gemma-9B encoder is computed
from its published sizes (MODEL_SPEC §6.1), encoder only, bf16.
Targets: fp8 shared <= 0.72 x bf16, fp8 all <= 0.51 x bf16, block swap N resident <= (N+1)/40
of the block bytes. The last line with --json:
{"bf16_bytes", "fp8_shared_bytes", "fp8_all_bytes", "blockswap_bytes": {N: peak}, ...}
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from happyhorse_core.dit.config import PRESETS  # noqa: E402
from happyhorse_core.dit import SandwichDiT  # noqa: E402
from happyhorse_core.dit.offload import module_bytes, plan_block_swap  # noqa: E402
from happyhorse_core.dit.ops import Ops  # noqa: E402

SWAP_N = (0, 10, 20, 40)
T5GEMMA_9B = dict(layers=42, hidden=3584, heads=16, head_dim=256, kv_heads=8, intermediate=14336, vocab=256000)


def dit_bytes(weight_dtype: str = "bf16", fp8_scope: str = "shared") -> tuple[int, SandwichDiT]:
    model = SandwichDiT(PRESETS["distill"], Ops(weight_dtype=weight_dtype, fp8_scope=fp8_scope, device="meta"))
    return module_bytes(model), model


def t5gemma_encoder_params(layers: int, hidden: int, heads: int, head_dim: int, kv_heads: int, intermediate: int,
                           vocab: int) -> dict[str, int]:
    """Encoder-only parameter counts: token embedding, per layer q/k/v/o + gated MLP + 4 RMSNorms, final norm."""
    attn = hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden
    mlp = 3 * hidden * intermediate
    norms = 4 * hidden  # pre/post attention, pre/post feed-forward (Gemma 2 style)
    return {"embedding": vocab * hidden, "layers": layers * (attn + mlp + norms), "final_norm": hidden,
            "linear": layers * (attn + mlp)}


def measure() -> dict:
    bf16, model = dit_bytes("bf16")
    fp8_shared, _ = dit_bytes("fp8_e4m3fn_scaled", "shared")
    fp8_all, _ = dit_bytes("fp8_e4m3fn_scaled", "all")
    block_total = sum(module_bytes(layer) for layer in model.layers)
    other = bf16 - block_total
    swap_peak, swap_resident = {}, {}
    for n in SWAP_N:
        plan = plan_block_swap(model.layers, n)
        swap_peak[str(n)] = other + plan.peak_bytes
        swap_resident[str(n)] = other + plan.resident_bytes
    enc = t5gemma_encoder_params(**T5GEMMA_9B)
    enc_params = enc["embedding"] + enc["layers"] + enc["final_norm"]
    return {"bf16_bytes": bf16, "fp8_shared_bytes": fp8_shared, "fp8_all_bytes": fp8_all,
            "blockswap_bytes": swap_peak, "blockswap_resident_bytes": swap_resident,
            "block_bytes": block_total, "non_block_bytes": other,
            "largest_block_bytes": max(module_bytes(layer) for layer in model.layers),
            "t5gemma_encoder_params": enc_params, "t5gemma_encoder_bf16_bytes": 2 * enc_params,
            "t5gemma_encoder_fp8_linear_bytes": 2 * enc_params - enc["linear"]}


def report(m: dict) -> list[str]:
    gb = 1e9
    bf16, blocks = m["bf16_bytes"], m["block_bytes"]
    lines = [f"DiT weights on the device (full size, 40 layers x 5120), bf16: {bf16 / gb:.2f} GB",
             f"  fp8 shared (layers 4-35):  {m['fp8_shared_bytes'] / gb:.2f} GB = "
             f"{m['fp8_shared_bytes'] / bf16:.3f} x bf16 (target <= 0.72)",
             f"  fp8 all block linears:     {m['fp8_all_bytes'] / gb:.2f} GB = "
             f"{m['fp8_all_bytes'] / bf16:.3f} x bf16 (target <= 0.51)",
             f"  block bytes {blocks / gb:.2f} GB, non-block (adapter, heads; fp32) {m['non_block_bytes'] / gb:.3f} GB,"
             f" largest block {m['largest_block_bytes'] / gb:.2f} GB = {40 * m['largest_block_bytes'] / blocks:.2f}/40"]
    for n in SWAP_N:
        res = m["blockswap_resident_bytes"][str(n)] - m["non_block_bytes"]
        peak = m["blockswap_bytes"][str(n)] - m["non_block_bytes"]
        lines.append(f"  block swap N={n:2d}: resident blocks {res / gb:6.2f} GB = {40 * res / blocks:5.2f}/40 "
                     f"(target <= {n + 1}/40: {'ok' if res <= (n + 1) / 40 * blocks else 'MISSED'}); peak during a run "
                     f"{peak / gb:6.2f} GB = {40 * peak / blocks:5.2f}/40 "
                     f"({'within' if peak <= (n + 1) / 40 * blocks else 'above'} {n + 1}/40)")
    lines.append(f"T5Gemma-9B encoder: {m['t5gemma_encoder_params'] / 1e9:.3f} B params, "
                 f"bf16 {m['t5gemma_encoder_bf16_bytes'] / gb:.2f} GB, "
                 f"fp8 linears {m['t5gemma_encoder_fp8_linear_bytes'] / gb:.2f} GB")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON on the last line")
    args = ap.parse_args(argv)
    m = measure()
    print("\n".join(report(m)))
    if args.json:
        print(json.dumps(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
