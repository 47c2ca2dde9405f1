"""Full-size speed check on one GPU (H100 80 GB): seconds per step, total and peak memory.

    bash bench/gpu_check.sh [--budget-s 420] [--skip-compile] [--text-tokens 256]
    python bench/gpu_check.py --dry-run           # CPU: print the plan and what is available
    python bench/gpu_check.py --tiny --device cpu  # CPU: the same code path on tiny models

Builds the full-size distilled DiT (40 layers, hidden 5120) with random weights: the module tree
is made on the meta device and materialised directly on the GPU, then filled with random values
there (bf16 block linears, fp32 norms/embedders/heads), so no host copy of 30 GB is ever made.
The 1080p SR DiT shares those weights (same shapes; v1 coordinates, windowed attention in 32 of
40 layers). Runs, in order, while the time budget lasts:

  1. SDPA, eager: 8-step distilled sampling of a 448x256 5 s clip, then Turbo-VAED decode
     (real structure, random bf16 weights), then one 1080p SR step;
  2. flash-attn, eager (if flash_attn / flash_attn_interface imports): the same;
  3. SDPA + torch.compile of the blocks: sampling (first step = compile); the SR step compiled
     too only with --compile-sr (its windowed-attention graphs take minutes to compile);
  4. fp8 weight storage (scaled e4m3fn in the shared layers, through torch._scaled_mm where
     this tree's Ops has `fp8_matmul`, else upcast per matmul): sampling.

Block swap (`happyhorse_core.dit.offload.BlockSwap`, when the tree has it) is measured as its own
run between 2 and 3: the same sampling with half the blocks (20 of 40) streamed from pinned host
memory.
The SR step runs without it: the 80 GB card holds the 30 GB of bf16 weights and its activations.
Reference figures to compare with (README of the reference, H100): 256p 5 s = 1.6 s DiT + 0.4 s
decode; 1080p SR = 31.0 s for 5 steps. Measured results: bench/RESULTS.md §6.
The last line is a JSON summary; with --out DIR it is also written to DIR/gpu_check.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from happyhorse_core.dit.config import PRESETS, DiTConfig  # noqa: E402
from happyhorse_core.decoders import TurboVAED, TurboVAEDConfig  # noqa: E402
from happyhorse_core.dit import SandwichDiT  # noqa: E402
from happyhorse_core.geometry import ClipGeometry  # noqa: E402
from happyhorse_core.dit.ops import FP8_DTYPES, Ops  # noqa: E402
from happyhorse_core.sampling.pipeline import Hooks, SamplingOptions, TextConditioning, generate  # noqa: E402
from happyhorse_core.dit.rope import rope_bands  # noqa: E402
from happyhorse_core.sampling.super_resolution import SROptions, super_resolve  # noqa: E402

BASE_SIZE, SECONDS = (448, 256), 5


def log(msg: str) -> None:
    print(msg, flush=True)


def flash_available() -> str | None:
    for name in ("flash_attn_interface", "flash_attn"):
        try:
            importlib.import_module(name)
            return name
        except Exception:  # missing, or a CUDA extension built for another torch
            continue
    return None


def configs(tiny: bool) -> tuple[DiTConfig, DiTConfig, TurboVAEDConfig]:
    if tiny:
        return PRESETS["tiny"], PRESETS["tiny_sr"].replace(**_sr_shape(PRESETS["tiny"])), TurboVAEDConfig.tiny()
    return PRESETS["distill"], PRESETS["sr_1080p"], TurboVAEDConfig()


def _sr_shape(cfg: DiTConfig) -> dict:
    """The SR DiT must have the base DiT's shapes to share its weights."""
    return {k: getattr(cfg, k) for k in ("num_layers", "hidden_size", "head_dim", "num_heads_kv", "mm_layers",
                                         "gelu7_layers")} | {"local_attn_layers": (0, 1, 2, 4, 5, 6)}


def build_dit(cfg: DiTConfig, device: torch.device, weight_dtype: str = "bf16", seed: int = 0,
              fp8_matmul: bool = False) -> SandwichDiT:
    """Meta skeleton -> empty tensors on `device` -> random init on `device` (no host copy)."""
    extra = {"fp8_matmul": True} if fp8_matmul else {}
    model = SandwichDiT(cfg, Ops(device="meta", weight_dtype=weight_dtype, **extra)).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("rope.bands"):
                t.copy_(rope_bands(cfg.rope_bands, device=device))
            elif name.endswith("weight_scale"):
                t.fill_(1.0)
            elif t.ndim == 1:
                t.normal_(0.0, 0.02 if name.endswith("bias") else 0.1, generator=gen)
            else:
                fill = torch.empty(t.shape, dtype=torch.bfloat16 if t.element_size() == 1 else t.dtype, device=device)
                fill.normal_(0.0, t.shape[1] ** -0.5, generator=gen)
                t.copy_(fill.to(t.dtype))
                del fill
    return model.eval()


def share_weights(sr_cfg: DiTConfig, base: SandwichDiT) -> SandwichDiT:
    """An SR-config DiT whose parameters are the base model's tensors (no extra memory)."""
    sr = SandwichDiT(sr_cfg, Ops(device="meta"))
    sr.load_state_dict(base.state_dict(), strict=True, assign=True)
    return sr.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def timed_hooks(device: torch.device) -> tuple[Hooks, list[float]]:
    times, last = [], [0.0]

    def before() -> None:  # wired as the "interrupt" hook, which runs at the start of every step
        sync(device)
        last[0] = time.perf_counter()

    def after(done: int, total: int) -> None:
        sync(device)
        times.append(round(time.perf_counter() - last[0], 3))

    return Hooks(progress=after, interrupt=before), times


def sample(model: SandwichDiT, text: TextConditioning, geo: ClipGeometry, device: torch.device) -> tuple[dict, tuple]:
    hooks, steps = timed_hooks(device)
    reset_peak(device)
    t0 = time.perf_counter()
    video, audio = generate(model, text, latent_frames=geo.latent_frames, latent_h=geo.latent_h,
                            latent_w=geo.latent_w, audio_frames=geo.audio_frames, opts=SamplingOptions(seed=1),
                            hooks=hooks, device=device)
    total = time.perf_counter() - t0
    steady = sorted(steps[1:])[len(steps[1:]) // 2] if len(steps) > 1 else steps[0]
    return {"steps": len(steps), "step_s": steps, "first_step_s": steps[0], "median_later_step_s": steady,
            "total_s": round(total, 3), "peak_gb": peak_gb(device)}, (video, audio)


def sr_step(model: SandwichDiT, video, audio, text: TextConditioning, geo: ClipGeometry, device) -> dict:
    sr_geo = geo.sr_geometry((1920, 1088)) if geo.width >= 448 else geo.sr_geometry((geo.width * 2, geo.height * 2))
    hooks, steps = timed_hooks(device)
    reset_peak(device)
    t0 = time.perf_counter()
    super_resolve(model, video, audio, text, latent_h=sr_geo.latent_h, latent_w=sr_geo.latent_w,
                  generator=torch.Generator().manual_seed(2), opts=SROptions(steps=1), hooks=hooks, device=device)
    return {"size": f"{sr_geo.width}x{sr_geo.height}", "tokens": sr_geo.video_tokens + geo.audio_frames
            + text.positive.shape[0], "step_s": steps[0], "total_s": round(time.perf_counter() - t0, 3),
            "peak_gb": peak_gb(device)}


def decode(cfg: TurboVAEDConfig, video: torch.Tensor, device: torch.device) -> dict:
    vaed = TurboVAED(cfg).to(device=device, dtype=torch.bfloat16).eval()
    gen = torch.Generator(device=device).manual_seed(3)
    with torch.no_grad():
        for p in vaed.parameters():
            p.normal_(0.0, 0.1 if p.ndim == 1 else p[0].numel() ** -0.5, generator=gen)
    vaed.decode(video[:, :, :1].to(device))  # warm-up
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    frames = vaed.decode(video.to(device))
    sync(device)
    return {"frames": list(frames.shape), "total_s": round(time.perf_counter() - t0, 3), "peak_gb": peak_gb(device)}


def bare_gemm_s(cfg: DiTConfig, counts: tuple[int, int, int], device: torch.device, repeats: int = 3) -> float:
    """Best time of the forward's matmuls alone (block linears per expert slice, QK^T and PV), bf16."""
    from dit_step import gemm_plan  # bench/ is on sys.path when this file runs as a script
    made: dict = {}

    def rand(*shape):
        if shape not in made:
            made[shape] = torch.randn(shape, device=device, dtype=torch.bfloat16)
        return made[shape]

    ops = []
    for item in gemm_plan(cfg, counts):
        if item[0] == "attn":
            _, L, H, D = item
            ops += [(rand(H, L, D), rand(H, D, L)), (rand(H, L, L), rand(H, L, D))]
        else:
            ops.append((rand(item[0], item[1]), rand(item[1], item[2])))
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass is a warm-up
        sync(device)
        t0 = time.perf_counter()
        for a, b in ops:
            torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    del made, ops
    return round(best, 4)


def plan(args, device: torch.device) -> dict:
    base_cfg, sr_cfg, _ = configs(args.tiny)
    geo = ClipGeometry(*BASE_SIZE, SECONDS) if not args.tiny else ClipGeometry(128, 64, 1)
    n = args.text_tokens if not args.tiny else 7
    meta = SandwichDiT(base_cfg, Ops(device="meta"))
    params = sum(p.numel() for p in meta.parameters())
    weight_gb = sum(p.numel() * p.element_size() for p in meta.parameters()) / 2**30
    tokens = geo.video_tokens + geo.audio_frames + n
    sr_geo = geo.sr_geometry((1920, 1088)) if not args.tiny else geo.sr_geometry((256, 128))
    return {"device": str(device), "torch": torch.__version__, "params_m": round(params / 1e6, 1),
            "bf16_weights_gb": round(weight_gb, 1), "base_tokens": tokens,
            "sr_tokens": sr_geo.video_tokens + geo.audio_frames + n, "sr_size": f"{sr_geo.width}x{sr_geo.height}",
            "flash_module": flash_available(), "fp8_in_tree": "fp8_e4m3fn" in FP8_DTYPES,
            "block_swap": importlib.util.find_spec("happyhorse_core.dit.offload") is not None,
            "runs": ["sdpa", "flash" if flash_available() else "flash (skipped: not importable)",
                     "block_swap" if importlib.util.find_spec("happyhorse_core.dit.offload") else "block_swap (no module)",
                     "compile" if not args.skip_compile else "compile (skipped)", "fp8 storage"]}


def run_matrix(args, device: torch.device, summary: dict) -> None:
    base_cfg, sr_cfg, vaed_cfg = configs(args.tiny)
    geo = ClipGeometry(*BASE_SIZE, SECONDS) if not args.tiny else ClipGeometry(128, 64, 1)
    g = torch.Generator().manual_seed(4)
    n = args.text_tokens if not args.tiny else 7
    text = TextConditioning(torch.randn(n, base_cfg.text_in_channels, generator=g))
    start = time.perf_counter()
    left = lambda: args.budget_s - (time.perf_counter() - start)  # noqa: E731
    t0 = time.perf_counter()
    base = build_dit(base_cfg, device)
    sync(device)
    summary["build_s"] = round(time.perf_counter() - t0, 1)
    summary["weights_gb"] = round(torch.cuda.memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
    sr = share_weights(sr_cfg, base)
    entries = [("sdpa", "sdpa", False), ("flash", "flash", False), ("block_swap", "sdpa", False),
               ("compile", "sdpa", True)]
    for name, backend, compiled in entries:
        if name == "block_swap":
            summary[name] = swap_run(base, text, geo, device, left, blocks_on_device=base_cfg.num_layers // 2)
            log(f"[{name}] {json.dumps(summary[name])}")
            continue
        if backend == "flash" and not flash_available():
            summary[name] = "skipped: flash_attn / flash_attn_interface not importable"
            continue
        if compiled and args.skip_compile:
            summary[name] = "skipped: --skip-compile"
            continue
        if left() < (150 if compiled else 30):
            summary[name] = f"skipped: time budget ({left():.0f} s left)"
            continue
        summary[name] = one_run(name, base, sr, backend, compiled, text, geo, vaed_cfg, device, left, args.compile_sr)
        log(f"[{name}] {json.dumps(summary[name])}")
    del base, sr
    if device.type == "cuda":
        torch.cuda.empty_cache()
    summary["fp8"] = fp8_run(base_cfg, text, geo, device, left) if "fp8_e4m3fn" in FP8_DTYPES else "not in this tree"
    log(f"[fp8] {json.dumps(summary['fp8'])}")


def one_run(name, base, sr, backend, compiled, text, geo, vaed_cfg, device, left, compile_sr=False) -> dict:
    out: dict = {}
    for m in (base, sr):
        m.attn_backend = backend
    if compiled:
        base.compile_blocks()
    try:
        out["sample_256p"], (video, audio) = sample(base, text, geo, device)
        if name == "sdpa":
            counts = (geo.video_tokens, geo.audio_frames, text.positive.shape[0])
            out["bare_gemm_s"] = bare = bare_gemm_s(base.config, counts, device)
            out["ratio_step_to_bare"] = round(out["sample_256p"]["median_later_step_s"] / bare, 3)
            out["decode_256p"] = decode(vaed_cfg, video, device)
        if compiled and not compile_sr:
            out["sr_1080p_step"] = "skipped: compiling the windowed-attention SR graphs takes minutes (--compile-sr)"
        elif left() < (200 if compiled else 20):
            out["sr_1080p_step"] = f"skipped: time budget ({left():.0f} s left)"
        else:
            if compiled:
                sr.compile_blocks()
            out["sr_1080p_step"] = sr_step(sr, video, audio, text, geo, device)
    except torch.OutOfMemoryError as e:
        out["error"] = f"out of GPU memory: {str(e).splitlines()[0]}"
    except Exception as e:  # keep the other runs going; report what broke
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return out


def swap_run(base: SandwichDiT, text, geo, device, left, blocks_on_device: int) -> dict | str:
    """256p sampling with block swap (half the blocks resident), then every block back on the device."""
    if importlib.util.find_spec("happyhorse_core.dit.offload") is None:
        return "skipped: happyhorse_core.dit.offload is not in this tree"
    if left() < 60:
        return f"skipped: time budget ({left():.0f} s left)"
    from happyhorse_core.dit.offload import BlockSwap
    base.attn_backend = "sdpa"
    try:
        t0 = time.perf_counter()
        swap = BlockSwap(base, blocks_on_device, device, pin_memory=True)
        out = {"blocks_on_device": blocks_on_device, "setup_s": round(time.perf_counter() - t0, 1),
               "summary": swap.summary()}
        try:
            out["sample_256p"], _ = sample(base, text, geo, device)
        finally:
            swap.remove()
            base.to(device)
        return out
    except Exception as e:
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def fp8_run(cfg: DiTConfig, text, geo, device, left) -> dict | str:
    if left() < 60:
        return f"skipped: time budget ({left():.0f} s left)"
    fast = "fp8_matmul" in {f.name for f in dataclasses.fields(Ops)}
    try:
        model = build_dit(cfg, device, weight_dtype="fp8_e4m3fn_scaled" if fast else "fp8_e4m3fn", seed=5,
                          fp8_matmul=fast)
        res, _ = sample(model, text, geo, device)
        how = "torch._scaled_mm where shapes allow, else upcast" if fast else "upcast to bf16 per matmul"
        return {"weight_dtype": f"fp8 e4m3fn{' scaled' if fast else ''} (shared layers), {how}", "sample_256p": res}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit (works without a GPU)")
    ap.add_argument("--tiny", action="store_true", help="tiny models and a 128x64 1 s clip (code-path check)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny only)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting new runs after this many seconds")
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--compile-sr", action="store_true", help="also compile the SR DiT (5 graph kinds, minutes)")
    ap.add_argument("--text-tokens", type=int, default=256)
    ap.add_argument("--out", help="also write the JSON summary to OUT/gpu_check.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    summary = plan(args, device)
    log("plan: " + json.dumps(summary))
    if args.dry_run:
        return 0
    if device.type == "cuda" and not torch.cuda.is_available():
        log("gpu_check: no CUDA device is visible to torch " + torch.__version__ + ". This check needs one NVIDIA "
            "GPU with at least 70 GB (an H100 80 GB); run --dry-run for the plan, or --tiny --device cpu.")
        return 2
    if device.type == "cpu" and not args.tiny:
        log("gpu_check: the full-size model on CPU is not a useful measurement; use --tiny --device cpu")
        return 2
    if device.type == "cuda":
        summary["gpu"] = torch.cuda.get_device_name(device)
    run_matrix(args, device, summary)
    line = json.dumps(summary)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_check.json").write_text(line + "\n")
    log(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
