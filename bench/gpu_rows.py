"""Measurements for bench/gpu_check.py: building full-size random models on the device, timed
sampling / SR / decode, and the micro checks (GEMM alignment, local attention, attention backends).

Every timing synchronises the device; peak memory is torch.cuda.max_memory_allocated since the
last reset (None on CPU). Shapes: 256p = 448x256 5 s (3584 video + 126 audio + text tokens);
1080p = 1920x1088 (65,280 video tokens), 32 latent frames.
"""
from __future__ import annotations

import time

import torch

from happyhorse_core.decoders import TurboVAED, TurboVAEDConfig
from happyhorse_core.decoders.turbo_speed import DecodeSpeed, apply_decode_speed
from happyhorse_core.dit import SandwichDiT
from happyhorse_core.dit.align import align_gemms_
from happyhorse_core.dit.config import DiTConfig
from happyhorse_core.dit.ops import Ops
from happyhorse_core.geometry import ClipGeometry
from happyhorse_core.sampling.pipeline import Hooks, SamplingOptions, TextConditioning, generate
from happyhorse_core.sampling.super_resolution import SROptions, super_resolve
from random_weights import materialise_random_


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def error_line(e: BaseException) -> str:
    """`Type: first line of the message`, for a row that failed while the others keep going."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def timed(fn, device: torch.device) -> tuple[float, object]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return round(time.perf_counter() - t0, 3), out


# -- models ---------------------------------------------------------------------------------------

def build_dit(cfg: DiTConfig, device: torch.device, weight_dtype: str = "bf16", seed: int = 0) -> SandwichDiT:
    """Meta skeleton filled tensor by tensor on `device` (random_weights: no host copy, fp8 weights quantized
    with real per-tensor scales), then the loader's GEMM alignment."""
    model = SandwichDiT(cfg, Ops(device="meta", weight_dtype=weight_dtype, fp8_scope="shared"))
    align_gemms_(materialise_random_(model, device, seed))
    return model


def set_structure(model: SandwichDiT, cfg: DiTConfig) -> SandwichDiT:
    """Run the same weights as another variant (base <-> 1080p SR differ only in coordinates and
    which layers are windowed): no second copy of 30 GB."""
    model.config = cfg
    for i, layer in enumerate(model.layers):
        layer.attention.local = i in cfg.local_attn_layers
        layer.attention.window = cfg.frame_receptive_field
    return model


def random_vaed(cfg: TurboVAEDConfig, device: torch.device, speed: DecodeSpeed) -> TurboVAED:
    vaed = TurboVAED(cfg).to(device=device, dtype=torch.bfloat16).eval()
    gen = torch.Generator(device=device).manual_seed(3)
    with torch.no_grad():
        for p in vaed.parameters():
            p.normal_(0.0, 0.1 if p.ndim == 1 else p[0].numel() ** -0.5, generator=gen)
    return apply_decode_speed(vaed, speed)


# -- stages ---------------------------------------------------------------------------------------

def step_hooks(device: torch.device) -> tuple[Hooks, list[float]]:
    times, last = [], [0.0]

    def before() -> None:  # the "interrupt" hook runs at the start of every step
        sync(device)
        last[0] = time.perf_counter()

    def after(done: int, total: int) -> None:
        sync(device)
        times.append(round(time.perf_counter() - last[0], 3))

    return Hooks(progress=after, interrupt=before), times


def sample(model: SandwichDiT, text: TextConditioning, geo: ClipGeometry, device: torch.device,
           steps: int = 8) -> tuple[dict, tuple]:
    """Distilled sampling of `geo`: total seconds, per-step seconds, peak memory."""
    hooks, per_step = step_hooks(device)
    reset_peak(device)
    total, out = timed(lambda: generate(model, text, latent_frames=geo.latent_frames, latent_h=geo.latent_h,
                                        latent_w=geo.latent_w, audio_frames=geo.audio_frames,
                                        opts=SamplingOptions(seed=1, steps=steps), hooks=hooks, device=device),
                       device)
    return {"total_s": total, "step_s": per_step, "peak_gb": peak_gb(device)}, out


def sr_steps(model: SandwichDiT, video, audio, text: TextConditioning, sr_geo: ClipGeometry, device: torch.device,
             steps: int) -> dict:
    """`steps` SR steps; the last one is the steady step (the first may include kernel compiles)."""
    hooks, per_step = step_hooks(device)
    reset_peak(device)
    total, _ = timed(lambda: super_resolve(model, video, audio, text, latent_h=sr_geo.latent_h,
                                           latent_w=sr_geo.latent_w, generator=torch.Generator().manual_seed(2),
                                           opts=SROptions(steps=steps), hooks=hooks, device=device), device)
    return {"total_s": total, "step_s": per_step, "steady_step_s": per_step[-1], "peak_gb": peak_gb(device)}


def decode(vaed: TurboVAED, latent: torch.Tensor, device: torch.device) -> dict:
    vaed.decode(latent[:, :, :2].to(device))  # warm-up (and compile of the first-window shape)
    reset_peak(device)
    seconds, frames = timed(lambda: vaed.decode(latent.to(device)), device)
    return {"s": seconds, "frames": list(frames.shape), "peak_gb": peak_gb(device)}


# -- micro checks ----------------------------------------------------------------------------------

def best_of(fn, device: torch.device, repeats: int = 3) -> float:
    fn()
    return min(timed(fn, device)[0] for _ in range(repeats))


def gemm_alignment(device: torch.device, m: int, k: int = 13652, n: int = 5120) -> dict:
    """down_proj with its published K against the padded K (dit/align.py), bf16."""
    from happyhorse_core.dit.align import padded_width
    kp = padded_width(k)
    x, w = torch.randn(m, kp, device=device, dtype=torch.bfloat16), torch.randn(n, kp, device=device,
                                                                                 dtype=torch.bfloat16)
    xu, wu = x[:, :k].contiguous(), w[:, :k].contiguous()
    t_u = best_of(lambda: torch.nn.functional.linear(xu, wu), device)
    t_p = best_of(lambda: torch.nn.functional.linear(x, w), device)
    return {"m": m, "k": k, "k_padded": kp, "unaligned_ms": round(t_u * 1e3, 3), "padded_ms": round(t_p * 1e3, 3)}


def local_attention_methods(device: torch.device, frames: int, tpf: int, extra: int, heads=(40, 8), d=128,
                            window: int = 11) -> dict:
    """One windowed-attention call at the given geometry: flex, banded, and the old per-frame cat."""
    from happyhorse_core.dit import local_attention as la
    from happyhorse_core.dit.attention import attention
    L, nv = frames * tpf + extra, frames * tpf
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(L, heads[0], d, device=device, dtype=torch.bfloat16, generator=g)
    k = torch.randn(L, heads[1], d, device=device, dtype=torch.bfloat16, generator=g)
    v = torch.randn(L, heads[1], d, device=device, dtype=torch.bfloat16, generator=g)

    def per_frame_cat():  # what the previous version did: concatenate each frame's window keys
        out = torch.empty_like(q)
        for i in range(frames):
            lo, hi = max(0, i - window) * tpf, min(frames, i + window + 1) * tpf
            rows = slice(i * tpf, (i + 1) * tpf)
            out[rows] = attention(q[rows], torch.cat([k[lo:hi], k[nv:]]), torch.cat([v[lo:hi], v[nv:]]))
        out[nv:] = attention(q[nv:], k, v)
        return out

    res: dict = {"tokens": L}
    ref = per_frame_cat()
    for name, fn in (("per_frame_cat", per_frame_cat),
                     ("banded", lambda: la.local_attention(q, k, v, num_video=nv, tokens_per_frame=tpf,
                                                           window=window, method="banded")),
                     ("flex", lambda: la.local_attention(q, k, v, num_video=nv, tokens_per_frame=tpf,
                                                         window=window, method="flex"))):
        try:
            t0 = time.perf_counter()
            out = fn()
            sync(device)
            first = time.perf_counter() - t0
            res[name] = {"first_s": round(first, 3), "s": best_of(fn, device, 2),
                         "max_abs_diff_vs_cat": round((out.float() - ref.float()).abs().max().item(), 5)}
        except Exception as e:  # report, keep going
            res[name] = error_line(e)
    return res


def attention_backends(device: torch.device, L: int, heads=(40, 8), d=128) -> dict:
    """Global attention at the 256p token count with every backend the machine has: time and max
    difference from SDPA (bf16 inputs)."""
    from happyhorse_core.dit import attention as attn
    g = torch.Generator(device=device).manual_seed(1)
    q = torch.randn(L, heads[0], d, device=device, dtype=torch.bfloat16, generator=g)
    k = torch.randn(L, heads[1], d, device=device, dtype=torch.bfloat16, generator=g)
    v = torch.randn(L, heads[1], d, device=device, dtype=torch.bfloat16, generator=g)
    ref = attn.attention(q, k, v, "sdpa")
    res = {"auto_resolves_to": attn.resolve_backend("auto", device, torch.bfloat16),
           "auto_for_fp32": attn.resolve_backend("auto", device, torch.float32)}
    for name in ("sdpa", "flash", "sage"):
        if attn.resolve_backend(name, device, torch.bfloat16) != name:
            res[name] = "not installed"
            continue
        try:
            out = attn.attention(q, k, v, name)
            res[name] = {"ms": round(best_of(lambda: attn.attention(q, k, v, name), device) * 1e3, 3),
                         "max_abs_diff_vs_sdpa": round((out.float() - ref.float()).abs().max().item(), 5)}
        except Exception as e:
            res[name] = error_line(e)
    return res
