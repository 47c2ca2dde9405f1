"""Paper estimate of sequence-parallel DiT steps on 1/2/4/8 GPUs (nothing here runs on a GPU).

    python bench/parallel_estimate.py [--video-tokens 53040 --audio-tokens 126 --text-tokens 300 --frames 26]

Model numbers come from DiTConfig (the real sr_1080p preset); the hardware numbers are
ASSUMPTIONS given on the command line: effective bf16 throughput (--tflops, default 600) and
NVLink all-to-all bandwidth per GPU per direction (--nvlink-gbs, default 450). Attention all-to-
alls (q, k, v out; attention out back) are on the critical path, so their time is added, not
overlapped. Prints a markdown table for bench/RESULTS_parallel.md.
"""
from __future__ import annotations

import argparse
import math

from happyhorse_core.dit.config import PRESETS, DiTConfig

BF16 = 2


def linear_flops(cfg: DiTConfig, rows: int) -> float:
    """2·M·N·K over all 40 layers' linears (qkv+gate, proj, MLP up/down)."""
    d, total = cfg.hidden_size, 0.0
    for layer in range(cfg.num_layers):
        inner = cfg.mlp_intermediate(layer)
        up = inner if cfg.is_gelu7(layer) else 2 * inner
        total += 2 * rows * d * (cfg.qkv_out + d + up) + 2 * rows * inner * d
    return total


def attention_flops(cfg: DiTConfig, video: int, other: int, frames: int) -> float:
    """QK^T + PV (4·Lq·Lk·Hq·Dh) over all layers; windowed layers count only the keys they see."""
    per_pair = 4 * cfg.num_heads_q * cfg.head_dim
    total_len = video + other
    full = total_len * total_len
    tpf = video // frames
    local = other * total_len  # audio/text queries see everything
    for i in range(frames):
        seen = (min(frames, i + cfg.frame_receptive_field + 1) - max(0, i - cfg.frame_receptive_field)) * tpf
        local += tpf * (seen + other)
    n_local = len(cfg.local_attn_layers)
    return per_pair * (full * (cfg.num_layers - n_local) + local * n_local)


def all_to_all_bytes(cfg: DiTConfig, rows: int, world: int) -> float:
    """Bytes one GPU sends per layer: its (W-1)/W share of q, k, v (kv heads replicated up to W) and out."""
    if world == 1:
        return 0.0
    hkv = cfg.num_heads_kv if cfg.num_heads_kv % world == 0 else math.lcm(cfg.num_heads_kv, world)
    heads = 2 * cfg.num_heads_q + 2 * hkv  # q + out, k + v
    return rows / world * heads * cfg.head_dim * BF16 * (world - 1) / world


def activation_bytes(cfg: DiTConfig, rows: int, world: int) -> float:
    """Rough per-GPU peak of one layer: fp32 residual + qkvg + full-sequence q/k/v/out of the head group
    + the larger MLP temporaries (up-projection and activation), bf16."""
    own = rows / world
    inner = cfg.swiglu7_intermediate
    hkv = cfg.num_heads_kv if cfg.num_heads_kv % world == 0 else math.lcm(cfg.num_heads_kv, world)
    attn = rows * (2 * cfg.num_heads_q + 2 * hkv) / world * cfg.head_dim * BF16
    return own * cfg.hidden_size * 4 + own * cfg.qkv_out * BF16 + attn + own * 3 * inner * BF16


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video-tokens", type=int, default=53040)
    p.add_argument("--audio-tokens", type=int, default=126)
    p.add_argument("--text-tokens", type=int, default=300)
    p.add_argument("--frames", type=int, default=26, help="latent frames (for the windowed layers)")
    p.add_argument("--tflops", type=float, default=600.0)
    p.add_argument("--nvlink-gbs", type=float, default=450.0)
    a = p.parse_args()
    cfg = PRESETS["sr_1080p"]
    rows = a.video_tokens + a.audio_tokens + a.text_tokens
    other = a.audio_tokens + a.text_tokens
    lin, att = linear_flops(cfg, rows), attention_flops(cfg, a.video_tokens, other, a.frames)
    one = (lin + att) / (a.tflops * 1e12)
    print(f"L = {rows} tokens; linears {lin / 1e12:.0f} TFLOP, attention {att / 1e12:.0f} TFLOP per DiT call; "
          f"{len(cfg.local_attn_layers)} windowed layers\n")
    print("| GPUs | compute / call | all-to-all / layer / GPU | comm / call | est. time / call | speed-up | "
          "activations / GPU (1 layer) |")
    print("|---|---|---|---|---|---|---|")
    for w in (1, 2, 4, 8):
        comm_b = all_to_all_bytes(cfg, rows, w)
        comm = cfg.num_layers * comm_b / (a.nvlink_gbs * 1e9)
        t = one / w + comm
        print(f"| {w} | {one / w:.2f} s | {comm_b / 1e6:.0f} MB | {comm:.3f} s | {t:.2f} s | {one / t:.2f}x | "
              f"{activation_bytes(cfg, rows, w) / 1e9:.1f} GB |")


if __name__ == "__main__":
    main()
