"""Peak GPU memory of one full-size DiT forward at 256p, 5 s (needs a CUDA GPU, ~45 GB free for bf16).

    python bench/gpu_memory.py [--modes bf16,fp8_shared,swap0,swap20] [--json] [--dry-run]

A random-weight 15B DiT (real shapes) is built directly on the GPU; inputs are one 448x256, 5 s
clip: 126 frames -> T = 32 latent frames of 16x28 -> 3584 video tokens, 126 audio tokens and
`--text-tokens` text tokens (640 = the encoder's cap). For each mode one warm-up and one measured
forward run; reported: weight bytes on the GPU, torch.cuda.max_memory_allocated of the measured
run, its time, and the output's relative L2 difference from the bf16 run (block swap must give
0.0 exactly). Modes: bf16, fp8_shared (e4m3fn scaled, layers 4-35), fp8_shared_mm (the same via
torch._scaled_mm), swapN (bf16, N blocks resident, the rest pinned in CPU memory).
Sized for < 5 minutes on one H100. `--dry-run` prints the plan without a GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from happyhorse_core.dit import fp8  # noqa: E402
from happyhorse_core.dit.config import PRESETS  # noqa: E402
from happyhorse_core.dit import SandwichDiT  # noqa: E402
from happyhorse_core.weights.checks import assign_tensor  # noqa: E402
from happyhorse_core.dit.offload import BlockSwap, module_bytes, plan_block_swap  # noqa: E402
from happyhorse_core.dit.ops import Ops  # noqa: E402
from happyhorse_core.dit.sequence import pack  # noqa: E402

MODES = ("bf16", "fp8_shared", "fp8_shared_mm", "swap0", "swap20")


def geometry(seconds: int, width: int, height: int, text: int) -> dict[str, int]:
    frames = seconds * 25 + 1
    t = (frames - 1) // 4 + 1
    h, w = height // 16 // 2 * 2, width // 16 // 2 * 2
    video = t * (h // 2) * (w // 2)
    return {"frames": frames, "latent_t": t, "latent_h": h, "latent_w": w, "video_tokens": video,
            "audio_tokens": frames, "text_tokens": text, "tokens": video + frames + text}


def mode_ops(mode: str) -> Ops:
    if mode.startswith("fp8"):
        return Ops(weight_dtype="fp8_e4m3fn_scaled", fp8_scope="shared", device="meta",
                   fp8_matmul=mode.endswith("_mm"))
    return Ops(device="meta")


def random_dit(ops: Ops, device: torch.device, seed: int = 0) -> SandwichDiT:
    """Full-size SandwichDiT with N(0, 1/fan_in) matrices, made tensor by tensor on `device`."""
    model = SandwichDiT(PRESETS["distill"], ops)
    g = torch.Generator(device).manual_seed(seed)
    for name, t in list(model.state_dict().items()):
        if name.endswith(("rope.bands", "weight_scale")):
            continue
        std = 0.1 if t.ndim == 1 else t.shape[1] ** -0.5
        w = torch.randn(t.shape, generator=g, device=device, dtype=torch.bfloat16) * std
        if fp8.is_fp8(t.dtype):
            owner = model.get_submodule(name.rsplit(".", 1)[0])
            q, scale = fp8.quantize(w, t.dtype, scaled=owner.weight_scale is not None)
            assign_tensor(model, name, q)
            if scale is not None:
                assign_tensor(model, name[:-len("weight")] + "weight_scale", scale)
        else:
            assign_tensor(model, name, w.to(t.dtype))
        del w
    model.adapter.rope.bands = model.adapter.rope.bands.to(device)
    return model.eval()


def inputs(geo: dict, device: torch.device):
    g = torch.Generator().manual_seed(1)
    video = torch.randn(1, 48, geo["latent_t"], geo["latent_h"], geo["latent_w"], generator=g)
    audio = torch.randn(1, geo["audio_tokens"], 64, generator=g)
    text = torch.randn(geo["text_tokens"], 3584, generator=g)
    seq = pack(video, audio, text)
    return [x.to(device) for x in (seq.video, seq.audio, seq.text, seq.coords)], seq.tokens_per_frame


def forward(model, args, tpf) -> tuple[torch.Tensor, float, int]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.no_grad():
        v, a = model(*args, tpf)
    torch.cuda.synchronize()
    return torch.cat([v.flatten(), a.flatten()]).float().cpu(), time.perf_counter() - start, \
        torch.cuda.max_memory_allocated()


def run_modes(modes: list[str], geo: dict) -> list[dict]:
    device = torch.device("cuda")
    args, tpf = inputs(geo, device)
    rows, ref, model, swap, prev = [], None, None, None, None
    for mode in modes:
        if swap is not None:
            swap.remove()  # swapped blocks stay in CPU memory: only another swap mode may reuse the model
            swap = None
        reuse = prev in ("bf16",) or (prev or "").startswith("swap")
        if not (reuse and mode.startswith("swap")):
            model = None
            torch.cuda.empty_cache()
            model = random_dit(mode_ops(mode), device)
        prev = mode
        if mode.startswith("swap"):
            swap = BlockSwap(model, int(mode[4:]), device, pin_memory=True)
        torch.cuda.empty_cache()
        weights = torch.cuda.memory_allocated()
        forward(model, args, tpf)  # warm-up
        out, sec, peak = forward(model, args, tpf)
        ref = out if mode == "bf16" else ref
        diff = None if ref is None else ((out - ref).norm() / ref.norm()).item()
        rows.append({"mode": mode, "weights_bytes": weights, "peak_bytes": peak, "seconds": round(sec, 3),
                     "rel_l2_vs_bf16": diff, "summary": swap.summary() if swap else ""})
        print(f"{mode:14s} weights {weights / 1e9:6.2f} GB  peak {peak / 1e9:6.2f} GB  {sec:6.2f} s  "
              f"rel L2 vs bf16 {diff}", flush=True)
    return rows


def dry_run(modes: list[str], geo: dict) -> list[dict]:
    rows = []
    for mode in modes:
        model = SandwichDiT(PRESETS["distill"], mode_ops(mode))
        total = module_bytes(model)
        if mode.startswith("swap"):
            plan = plan_block_swap(model.layers, int(mode[4:]))
            total = total - plan.swapped_bytes - plan.resident_bytes + plan.peak_bytes
        rows.append({"mode": mode, "weights_bytes_planned": total})
        print(f"{mode:14s} weights on the GPU (planned, incl. one swapped block in flight) {total / 1e9:6.2f} GB")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default="bf16,fp8_shared,swap0,swap20",
                    help=f"comma-separated, from {', '.join(MODES)}; bf16 first gives the reference output")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--width", type=int, default=448)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--text-tokens", type=int, default=640)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="print the plan (tokens, planned weight bytes); no GPU")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES and not (m.startswith("swap") and m[4:].isdigit())]
    if bad:
        ap.error(f"unknown mode(s) {bad}; choose from {', '.join(MODES)} or swapN")
    geo = geometry(args.seconds, args.width, args.height, args.text_tokens)
    print(f"clip {args.width}x{args.height}, {args.seconds} s: {geo}")
    if args.dry_run:
        rows = dry_run(modes, geo)
    elif not torch.cuda.is_available():
        print(f"error: bench/gpu_memory.py needs a CUDA GPU (torch {torch.__version__} sees none); "
              "use --dry-run to print the plan without one.", file=sys.stderr)
        return 2
    else:
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
        rows = run_modes(modes, geo)
    if args.json:
        print(json.dumps({"geometry": geo, "runs": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
