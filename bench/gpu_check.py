"""Full-size speed check on one GPU: the whole matrix against the reference's numbers.

    bash bench/gpu_check.sh [--budget-s 430] [--only eager,fp8,compiled,decode,micro,e2e]
    python bench/gpu_check.py --dry-run            # no CUDA needed: the plan and what is installed
    python bench/gpu_check.py --tiny --device cpu  # the same code path on tiny models (CPU)

Random weights at full size (distilled DiT, 40 layers, hidden 5120, built on the device; the
1080p SR DiT runs the same weights with its own coordinates and windowed layers), the loader's
GEMM alignment applied. Rows, each with peak GPU memory, in this order while the budget lasts:

  eager      bf16, SDPA (or flash-attn under `auto`): 256p 5 s 8 steps, 1080p SR steps
  micro      down_proj K alignment, windowed attention (flex / banded / old per-frame cat),
             attention backends (sdpa / flash / sage when installed)
  decode     Turbo-VAED 1080p 5 s: bf16, bf16 + channels_last, (+ compile if time is left)
  fp8        fp8_e4m3fn_fast (shared layers, torch._scaled_mm): 256p 8 steps, SR steps
  compiled   bf16 + per-block compile: first (compiling) 256p run, then a timed run; SR steps
  e2e        one measured 1080p run of the fastest config: 256p + 5 SR steps + decode

Every row's `e2e_1080p_s` is also the sum of its measured stages (256p + 5 x SR step + decode).
Reference (daVinci-MagiHuman README, H100): 256p DiT 1.6 s, 1080p SR 31.0 s / 5 steps = 6.2 s,
1080p decode 5.8 s, 1080p end to end 38.4 s. Results go to
bench/results/gpu_check_<gpu>_<date>.json (keys dit_256p_8steps_s, sr_1080p_step_s,
decode_1080p_s, e2e_1080p_s = the best row; `rows` has everything); then run
`python bench/perf_table.py --write` to refresh the README table.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from happyhorse_core.decoders import TurboVAEDConfig  # noqa: E402
from happyhorse_core.decoders.turbo_speed import DecodeSpeed  # noqa: E402
from happyhorse_core.dit import SandwichDiT, fp8  # noqa: E402
from happyhorse_core.dit.align import padded_width  # noqa: E402
from happyhorse_core.dit.config import PRESETS  # noqa: E402
from happyhorse_core.dit.ops import Ops  # noqa: E402
from happyhorse_core.geometry import ClipGeometry  # noqa: E402
from happyhorse_core.sampling.pipeline import TextConditioning  # noqa: E402
from happyhorse_core.sampling.super_resolution import SROptions, super_resolve  # noqa: E402
import gpu_rows as gr  # noqa: E402
from perf_table import REFERENCE  # noqa: E402

TARGETS = {"dit_256p_8steps_s": 1.0, "sr_1080p_step_s": 4.6, "sr_1080p_step_s_fp8": 3.0, "e2e_1080p_s": 25.0,
           "first_compiled_step_256p_s": 60.0}
KEYS = tuple(REFERENCE)
ROWS = ("eager", "micro", "decode", "fp8", "compiled", "e2e")
SR_STEPS_E2E = 5


def log(msg: str) -> None:
    print(msg, flush=True)


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def geometry(tiny: bool) -> tuple[ClipGeometry, ClipGeometry]:
    base = ClipGeometry(128, 64, 1) if tiny else ClipGeometry(448, 256, 5)
    return base, base.sr_geometry((256, 128) if tiny else (1920, 1088))


def configs(tiny: bool):
    if tiny:
        base = PRESETS["tiny"]
        return base, base.replace(coords_style="v1", local_attn_layers=(0, 1, 2, 4, 5, 6)), TurboVAEDConfig.tiny()
    return PRESETS["distill"], PRESETS["sr_1080p"], TurboVAEDConfig()


def plan(args, device: torch.device) -> dict:
    base_cfg, sr_cfg, _ = configs(args.tiny)
    geo, sr_geo = geometry(args.tiny)
    n = 7 if args.tiny else args.text_tokens
    meta = SandwichDiT(base_cfg, Ops(device="meta"))
    weight_gb = sum(p.numel() * p.element_size() for p in meta.parameters()) / 2**30
    return {"format": "gpu_check/2", "device": str(device), "torch": torch.__version__,
            "bf16_weights_gb": round(weight_gb, 1), "base_tokens": geo.video_tokens + geo.audio_frames + n,
            "sr_tokens": sr_geo.video_tokens + geo.audio_frames + n, "sr_size": f"{sr_geo.width}x{sr_geo.height}",
            "swiglu_width": f"{base_cfg.swiglu7_intermediate} -> {padded_width(base_cfg.swiglu7_intermediate)}",
            "installed": {m: installed(m) for m in ("flash_attn", "flash_attn_interface", "sageattention", "triton")},
            "planned": [r for r in ROWS if r in args.only], "budget_s": args.budget_s, "reference": REFERENCE,
            "targets": TARGETS}


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def allows(self, need_s: float, what: str, out: dict, key: str) -> bool:
        if self.left() >= need_s:
            return True
        out[key] = f"skipped: time budget ({self.left():.0f} s left, ~{need_s:.0f} s needed for {what})"
        return False


def guarded(out: dict, key: str, fn):
    """out[key] = fn(), or the error in one line (the other rows keep going)."""
    try:
        out[key] = fn()
    except torch.OutOfMemoryError as e:
        out[key] = f"out of GPU memory: {str(e).splitlines()[0]}"
    except Exception as e:
        out[key] = gr.error_line(e)
    log(f"[{key}] {json.dumps(out[key])[:1500]}")
    return out[key]


def dit_row(name: str, model, *, base_cfg, sr_cfg, text, geo, sr_geo, device, budget: Budget,
            warm_runs: int = 1) -> dict:
    """256p 8 steps (after `warm_runs` untimed runs) and SR steps for one model configuration."""
    row: dict = {"config": name}
    gr.set_structure(model, base_cfg)
    for _ in range(warm_runs):  # first-call work (cuBLAS/cuDNN init, compile) is reported, not counted
        t, _ = gr.timed(lambda: gr.sample(model, text, geo, device, steps=1), device)
        row.setdefault("warmup_s", []).append(t)
    res, (video, audio) = gr.sample(model, text, geo, device)
    row.update(dit_256p_8steps_s=res["total_s"], dit_256p_step_s=res["step_s"], dit_peak_gb=res["peak_gb"])
    need = 3.5 * 10 if not model.compiled else 200
    if budget.allows(need, f"{name} SR steps", row, "sr_1080p_step_s"):
        gr.set_structure(model, sr_cfg)
        sr = gr.sr_steps(model, video, audio, text, sr_geo, device, steps=2)
        row.update(sr_1080p_step_s=sr["steady_step_s"], sr_1080p_first_step_s=sr["step_s"][0],
                   sr_peak_gb=sr["peak_gb"])
        gr.set_structure(model, base_cfg)
    return row


def run_matrix(args, device: torch.device, summary: dict, save) -> None:
    """All rows in priority order; `save()` writes the results file after each (a hard timeout
    then still leaves everything measured so far)."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    budget = Budget(args.budget_s)
    base_cfg, sr_cfg, vaed_cfg = configs(args.tiny)
    geo, sr_geo = geometry(args.tiny)
    n = 7 if args.tiny else args.text_tokens
    text = TextConditioning(torch.randn(n, base_cfg.text_in_channels, generator=torch.Generator().manual_seed(4)))
    rows: list[dict] = summary.setdefault("rows", [])
    decode: dict = summary.setdefault("decode_1080p", {})
    stages = {"text": text, "geo": geo, "sr_geo": sr_geo, "base_cfg": base_cfg, "sr_cfg": sr_cfg}
    if "eager" in args.only or "micro" in args.only:
        summary["build_s"], model = gr.timed(lambda: gr.build_dit(base_cfg, device), device)
        model.attn_backend = "auto"
        if "eager" in args.only:
            rows.append(_row(lambda: dit_row("eager bf16", model, device=device, budget=budget, **stages),
                             "eager bf16"))
            save()
        if "micro" in args.only and budget.allows(30, "micro checks", summary, "micro"):
            summary["micro"] = micro_checks(summary, base_cfg, sr_geo, device)
            save()
        del model
        free()
    decode_geo = geo if args.tiny else sr_geo  # tiny: the small clip (the tiny decoder is still slow on CPU)
    if "decode" in args.only:
        decode_rows(decode, vaed_cfg, decode_geo, device, budget, compiled=False)
        save()
    if "fp8" in args.only and budget.allows(60, "fp8 fast row", summary, "fp8_row"):
        rows.append(_row(lambda: fp8_row(device=device, budget=budget, **stages), "fp8 fast"))
        save()
    if "compiled" in args.only and budget.allows(120, "compiled row", summary, "compiled_row"):
        rows.append(_row(lambda: compiled_row(device=device, budget=budget, **stages), "compiled bf16"))
        free(reset_compiled=True)
        save()
    finish(summary, rows, decode)
    save()
    if "e2e" in args.only:
        e2e_run(summary, vaed_cfg, device, budget, **stages)
        save()
    if "decode" in args.only and "compiled" in args.only:
        decode_rows(decode, vaed_cfg, decode_geo, device, budget, compiled=True)
        finish(summary, rows, decode)


def micro_checks(summary: dict, base_cfg, sr_geo, device) -> dict:
    micro: dict = {}
    heads, d = (base_cfg.num_heads_q, base_cfg.num_heads_kv), base_cfg.head_dim
    guarded(micro, "gemm_alignment", lambda: gr.gemm_alignment(
        device, m=summary["base_tokens"], k=base_cfg.swiglu7_intermediate, n=base_cfg.hidden_size))
    frames, tpf = sr_geo.latent_frames, sr_geo.video_tokens // sr_geo.latent_frames
    guarded(micro, "local_attention_1080p", lambda: gr.local_attention_methods(
        device, frames, tpf, summary["sr_tokens"] - sr_geo.video_tokens, heads=heads, d=d))
    guarded(micro, "attention_backends_256p", lambda: gr.attention_backends(
        device, summary["base_tokens"], heads=heads, d=d))
    return micro


def _row(fn, name: str) -> dict:
    out: dict = {}
    res = guarded(out, name, fn)
    free()
    return res if isinstance(res, dict) else {"config": name, "error": res}


def free(reset_compiled: bool = False) -> None:
    """Drop cached blocks between rows (a 30 GB model must not linger); after the compiled row also
    its graphs (they may keep the model's tensors alive)."""
    import gc
    if reset_compiled:
        torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fp8_row(*, device, budget, **stages) -> dict:
    model = gr.build_dit(stages["base_cfg"], device, weight_dtype="fp8_e4m3fn_fast", seed=5)
    model.attn_backend = "auto"
    row = dit_row("fp8_e4m3fn_fast", model, device=device, budget=budget, **stages)
    row["scaled_mm"] = ("rowwise" if fp8.rowwise_supported(device) else "per-tensor") \
        if fp8.scaled_mm_supported(device) else "not supported here: upcast per matmul"
    row["scaled_mm_fell_back"] = "scaled_mm" in fp8._warned
    del model
    return row


def compiled_row(*, device, budget, **stages) -> dict:
    from happyhorse_core.dit.compile import CompileOptions, enable_compile
    model = gr.build_dit(stages["base_cfg"], device)
    model.attn_backend = "auto"
    enable_compile(model, CompileOptions(cache_dir=str(ROOT / ".cache" / "torch_compile")))
    row = dit_row("compiled bf16", model, device=device, budget=budget, **stages)
    row["first_compiled_step_256p_s"] = row.get("warmup_s", [None])[0]
    del model
    return row


def decode_rows(out: dict, vaed_cfg, sr_geo, device, budget: Budget, compiled: bool) -> None:
    """Turbo-VAED decode of a 1080p 5 s latent per speed option, into `out` by option name."""
    latent = torch.randn(1, 48, sr_geo.latent_frames, sr_geo.latent_h, sr_geo.latent_w,
                         generator=torch.Generator().manual_seed(6))
    variants = [DecodeSpeed(torch.bfloat16, channels_last=True, compile=True)] if compiled else \
        [DecodeSpeed(torch.bfloat16), DecodeSpeed(torch.bfloat16, channels_last=True)]
    for speed in variants:
        if budget.allows(120 if speed.compile else 25, f"decode {speed.describe()}", out, speed.describe()):
            guarded(out, speed.describe(), lambda: gr.decode(gr.random_vaed(vaed_cfg, device, speed), latent, device))
            free()


def finish(summary: dict, rows: list[dict], decode: dict) -> None:
    """Per-row sums and ratios; the top-level keys are the best row's numbers. The decoder does not
    depend on the DiT configuration, so every row gets the fastest decode option measured."""
    timed_decodes = sorted((v["s"], k) for k, v in decode.items() if isinstance(v, dict))
    decode_s = timed_decodes[0][0] if timed_decodes else None
    summary["decode_1080p_option"] = timed_decodes[0][1] if timed_decodes else None
    for row in rows:
        if decode_s is not None:
            row["decode_1080p_s"] = decode_s
        if all(isinstance(row.get(k), (int, float)) for k in ("dit_256p_8steps_s", "sr_1080p_step_s")) \
                and decode_s is not None:
            row["e2e_1080p_s"] = round(row["dit_256p_8steps_s"] + SR_STEPS_E2E * row["sr_1080p_step_s"] + decode_s, 2)
            row["e2e_method"] = "sum of measured stages"
        row["ratio_to_reference"] = {k: round(row[k] / REFERENCE[k], 3) for k in KEYS
                                     if isinstance(row.get(k), (int, float))}
    for key in KEYS:
        best = [(r[key], r["config"]) for r in rows if isinstance(r.get(key), (int, float))]
        summary[key], summary[f"{key}_config"] = min(best) if best else (None, None)
    summary["targets_met"] = targets_met(summary, rows)


def targets_met(summary: dict, rows: list[dict]) -> dict:
    fp8_sr = [r["sr_1080p_step_s"] for r in rows if "fp8" in r["config"] and isinstance(r.get("sr_1080p_step_s"),
                                                                                          (int, float))]
    bf16_sr = [r["sr_1080p_step_s"] for r in rows if "fp8" not in r["config"]
               and isinstance(r.get("sr_1080p_step_s"), (int, float))]
    first = [r.get("first_compiled_step_256p_s") for r in rows if r.get("first_compiled_step_256p_s")]

    def check(values, target):
        return None if not values else min(values) <= target

    return {"dit_256p_8steps_s<=1.0": check([summary["dit_256p_8steps_s"]] if summary["dit_256p_8steps_s"] else [],
                                            TARGETS["dit_256p_8steps_s"]),
            "sr_1080p_step_s<=4.6 (bf16)": check(bf16_sr, TARGETS["sr_1080p_step_s"]),
            "sr_1080p_step_s<=3.0 (fp8)": check(fp8_sr, TARGETS["sr_1080p_step_s_fp8"]),
            "e2e_1080p_s<=25": check([summary["e2e_1080p_s"]] if summary["e2e_1080p_s"] else [],
                                     TARGETS["e2e_1080p_s"]),
            "first_compiled_step_256p_s<=60": check(first, TARGETS["first_compiled_step_256p_s"])}


def e2e_run(summary, vaed_cfg, device, budget, *, base_cfg, sr_cfg, text, geo, sr_geo) -> None:
    """One real 1080p run (256p 8 steps + 5 SR steps + decode) with eager bf16 and the fastest decode."""
    if not budget.allows(90, "measured e2e", summary, "e2e_measured"):
        return

    def run() -> dict:
        model = gr.build_dit(base_cfg, device)
        model.attn_backend = "auto"
        gr.sample(model, text, geo, device, steps=1)  # warm-up
        decoder = gr.random_vaed(vaed_cfg, device, DecodeSpeed(torch.bfloat16, channels_last=True))
        decoder.decode(torch.zeros(1, 48, 2, sr_geo.latent_h, sr_geo.latent_w, device=device))
        gr.reset_peak(device)

        def whole():
            gr.set_structure(model, base_cfg)
            _, (video, audio) = gr.sample(model, text, geo, device)
            gr.set_structure(model, sr_cfg)
            v, _ = super_resolve(model, video, audio, text, latent_h=sr_geo.latent_h, latent_w=sr_geo.latent_w,
                                 generator=torch.Generator().manual_seed(2), opts=SROptions(steps=SR_STEPS_E2E),
                                 device=device)
            return decoder.decode(v.to(device))

        seconds, _ = gr.timed(whole, device)
        return {"config": "eager bf16, decode bf16+channels_last", "e2e_1080p_s": seconds,
                "peak_gb": gr.peak_gb(device)}

    guarded(summary, "e2e_measured", run)


def result_path(summary: dict, out_dir: Path) -> Path:
    gpu = re.sub(r"[^a-z0-9]+", "_", summary.get("gpu", "cpu").lower()).strip("_")
    gpu = re.sub(r"^nvidia_", "", gpu)
    return out_dir / f"gpu_check_{gpu}_{summary['date']}.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit (works without a GPU)")
    ap.add_argument("--tiny", action="store_true", help="tiny models and clips (code-path check)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny only)")
    ap.add_argument("--budget-s", type=float, default=430.0, help="start nothing that would end after this")
    ap.add_argument("--only", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--text-tokens", type=int, default=256)
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"), help="where the results file goes")
    args = ap.parse_args(argv)
    args.only = [r for r in args.only.split(",") if r]
    if bad := [r for r in args.only if r not in ROWS]:
        ap.error(f"unknown rows {bad}; choose from {ROWS}")
    device = torch.device(args.device)
    summary = plan(args, device)
    log("plan: " + json.dumps(summary))
    if args.dry_run:
        return 0
    if device.type == "cuda" and not torch.cuda.is_available():
        log("gpu_check: no CUDA device is visible to torch " + torch.__version__ + ". This check needs one NVIDIA "
            "GPU with at least 70 GB (H100 80 GB / H200); run --dry-run for the plan, or --tiny --device cpu.")
        return 2
    if device.type == "cpu" and not args.tiny:
        log("gpu_check: the full-size model on CPU is not a useful measurement; use --tiny --device cpu")
        return 2
    summary["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu_tiny"
    summary["tiny"] = args.tiny  # a code-path check: bench/perf_table.py never shows it
    summary["date"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M")
    path = result_path(summary, Path(args.out_dir))
    path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        path.write_text(json.dumps(summary, indent=1) + "\n")

    summary["complete"] = False
    run_matrix(args, device, summary, save)
    summary["complete"] = True
    save()
    log(f"written: {path}")
    log(json.dumps({k: summary.get(k) for k in (*KEYS, "targets_met")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
