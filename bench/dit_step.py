"""One DiT forward vs the bare matmuls it contains (CPU by default).

    python bench/dit_step.py [--json] [--hidden 1280] [--layers 8] [--frames 9] [--dtype auto]
                             [--compile] [--threads N] [--profile]

The model is the real structure (sandwich experts, GQA, gated attention, SwiGLU7/GELU7) at a
scaled-down width, on the token geometry of a 256p (448x256) clip: 112 video tokens per latent
frame, 4 audio tokens per latent frame, 160 text tokens. "Bare" time is the same GEMMs run as
plain torch.matmul calls on preallocated inputs: every block linear (per expert slice) plus the
two attention products QK^T and PV per head group. The ratio forward / bare is the overhead of
everything else (norms, RoPE, activations, routing, softmax, casts). Target: <= 1.25.

--dtype auto is bf16 where the CPU has native bf16 kernels (oneDNN: AVX512-BF16 / AMX) and fp32
elsewhere: on an AVX2-only CPU bf16 GEMMs are emulated and one bf16 run takes over 10 minutes, which
measures the emulation, not our overhead.

--compile runs `SandwichDiT.compile_blocks()` first and reports the first (compiling) call as
`compile_s`; --profile prints the torch.profiler table of one forward. The machine is usually
shared: every time is the best of --repeats runs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from happyhorse_core.dit.config import DiTConfig  # noqa: E402
from happyhorse_core.dit import SandwichDiT  # noqa: E402
from happyhorse_core.dit.align import align_gemms_  # noqa: E402
from happyhorse_core.dit.ops import Ops  # noqa: E402
from happyhorse_core.dit.sequence import pack  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def auto_dtype() -> str:
    """bf16 where the CPU runs bf16 GEMMs natively, else fp32 (see the module docstring)."""
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    except (AttributeError, RuntimeError):
        return "fp32"


def build(args) -> tuple[SandwichDiT, DiTConfig]:
    n = args.layers
    cfg = DiTConfig(num_layers=n, hidden_size=args.hidden, head_dim=128, num_heads_kv=max(1, args.hidden // 640),
                    mm_layers=(0, 1, n - 2, n - 1), gelu7_layers=(0, 1))
    model = SandwichDiT(cfg, Ops(compute_dtype=DTYPES[args.dtype]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            std = 0.05 if p.ndim == 1 else p.shape[1] ** -0.5
            p.copy_((torch.randn(p.shape, generator=g) * std).to(p.dtype))
    align_gemms_(model)  # as the loader does (zero-padded MLP width / qkv rows)
    return model.eval(), cfg


def inputs(args):
    g = torch.Generator().manual_seed(1)
    frames = args.frames
    video = torch.randn(1, 48, frames, 16, 28, generator=g)  # 448x256 latent
    audio = torch.randn(1, 4 * (frames - 1) + 1, 64, generator=g)
    text = torch.randn(160, 3584, generator=g)
    return pack(video, audio, text)


def gemm_plan(cfg: DiTConfig, counts: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """(M, K, N) of every matmul in one forward: block linears per expert slice + attention."""
    L = sum(counts)
    plan = []
    for i in range(cfg.num_layers):
        rows = [c for c in counts if c] if cfg.num_experts(i) == 3 else [L]
        inner = cfg.mlp_intermediate(i)
        up = inner if cfg.is_gelu7(i) else 2 * inner
        for m in rows:
            plan += [(m, cfg.hidden_size, cfg.qkv_out), (m, cfg.hidden_size, cfg.hidden_size),
                     (m, cfg.hidden_size, up), (m, inner, cfg.hidden_size)]
        plan.append(("attn", L, cfg.num_heads_q, cfg.head_dim))
    return plan


def time_bare(plan, dtype, repeats: int) -> float:
    made: dict[tuple, torch.Tensor] = {}  # operands of equal shape are shared (values do not matter)

    def rand(*shape, dt=torch.float32):
        if (shape, dt) not in made:
            made[(shape, dt)] = torch.randn(*shape).to(dt)
        return made[(shape, dt)]

    ops = []
    for item in plan:
        if item[0] == "attn":  # CPU attention runs in fp32 (attention.py)
            _, L, H, D = item
            ops.append((rand(H, L, D), rand(H, D, L)))  # Q K^T
            ops.append((rand(H, L, L), rand(H, L, D)))  # P V
        else:
            m, k_, n = item
            ops.append((rand(m, k_, dt=dtype), rand(k_, n, dt=dtype)))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a, b in ops:
            torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return best


def time_forward(model, seq, repeats: int) -> float:
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(seq.video, seq.audio, seq.text, seq.coords, seq.tokens_per_frame)
            best = min(best, time.perf_counter() - t0)
    return best


def attention_share(model, seq) -> float:
    """Fraction of forward time spent inside the attention dispatcher (profiled once)."""
    from happyhorse_core.dit import attention as attn
    spent = [0.0]
    inner = attn._FUNCS["sdpa"]

    def timed(q, k, v):
        t0 = time.perf_counter()
        out = inner(q, k, v)
        spent[0] += time.perf_counter() - t0
        return out

    attn._FUNCS["sdpa"] = timed
    try:
        total = time_forward(model, seq, 1)
    finally:
        attn._FUNCS["sdpa"] = inner
    return spent[0] / total


def profile_table(model, seq, rows: int = 25) -> str:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        time_forward(model, seq, 1)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def machine() -> dict:
    """What the ratio depends on besides the code: CPU kind, SIMD level, torch, and the box's load."""
    import os
    import platform
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": model, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "load_avg_1m": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=1280)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--frames", type=int, default=9, help="latent frames (9 = 1.3 s; 32 = 5 s)")
    ap.add_argument("--dtype", choices=["auto", *sorted(DTYPES)], default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", type=Path, help="also write the JSON, with the machine and load, to this file")
    ap.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks first")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of one forward")
    args = ap.parse_args()
    if args.dtype == "auto":
        args.dtype = auto_dtype()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg = build(args)
    seq = inputs(args)
    if args.compile:
        model.compile_blocks()
    compile_s = time_forward(model, seq, 1)  # warm-up (compiles with --compile)
    fwd = time_forward(model, seq, args.repeats)
    bare = time_bare(gemm_plan(cfg, seq.split.counts), DTYPES[args.dtype], args.repeats)
    share = None if args.compile else attention_share(model, seq)  # compiled graphs bypass the hook
    res = {"forward_s": round(fwd, 6), "bare_gemm_s": round(bare, 6), "ratio": round(fwd / bare, 3),
           "attention_share": None if share is None else round(share, 3), "tokens": seq.split.total,
           "hidden": cfg.hidden_size,
           "layers": cfg.num_layers, "dtype": args.dtype, "threads": torch.get_num_threads(),
           "compiled": args.compile, "compile_s": round(compile_s, 1) if args.compile else None}
    print(f"tokens {res['tokens']} (video {seq.split.video}, audio {seq.split.audio}, text {seq.split.text}), "
          f"hidden {cfg.hidden_size}, {cfg.num_layers} layers, {args.dtype}, {res['threads']} threads")
    print(f"forward {fwd:.3f} s   bare GEMMs {bare:.3f} s   ratio {fwd / bare:.2f}"
          + ("" if share is None else f"   attention share {share:.0%}")
          + (f"   first (compiling) call {compile_s:.1f} s" if args.compile else ""))
    if args.profile:
        print(profile_table(model, seq))
    if args.json:
        print(json.dumps(res))
    if args.out:
        res.update(machine())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
