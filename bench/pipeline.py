"""Wall time of a whole generation, split by stage, for a tiny and a mid-size random model (CPU).

    python bench/pipeline.py [--configs tiny,mid] [--seconds 2] [--size 448x256] [--sr 540p]
                             [--compile] [--skip-one-shot] [--decode-input final|base] [--json]

Stages: text encode (tiny random T5Gemma from happyhorse_core.text, positive + negative prompt),
base sampling (distilled, 8 steps; per-step times), latent SR (SR DiT with v1 coordinates and
windowed attention, 5 UniPC steps; per-step times), Turbo-VAED decode (sliding windows, and the
one-shot decode for comparison: time and peak RSS), audio decode with the tiny stand-in codec
(the real Stable Audio VAE is ComfyUI's, not ours), and mp4 mux (happyhorse_core.media.mux).
All weights are random: the numbers are costs, not quality. "mid" is the structure of the real
DiT at hidden 1280 / 8 layers (bench/dit_step.py's default) with the real-size Turbo-VAED.
The last line with --json is a summary: {"configs": {name: {stage: seconds, ...}}, ...}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from happyhorse_core.testing import tiny_codecs  # noqa: E402
from happyhorse_core.dit.config import PRESETS, DiTConfig  # noqa: E402
from happyhorse_core.decoders import TurboVAED, TurboVAEDConfig  # noqa: E402
from happyhorse_core.dit import SandwichDiT  # noqa: E402
from happyhorse_core.geometry import ClipGeometry  # noqa: E402
from happyhorse_core.dit.ops import Ops  # noqa: E402
from happyhorse_core.sampling.pipeline import Hooks, SamplingOptions, TextConditioning, generate  # noqa: E402
from happyhorse_core.sampling.super_resolution import SROptions, super_resolve  # noqa: E402
from happyhorse_core.testing.tiny_dit import init_random_  # noqa: E402

PROMPT = "A woman with short grey hair sits at a wooden desk and looks into the camera. Dialogue: hello."
NEGATIVE = "blurry, low quality, distorted"


def dit_configs(name: str) -> tuple[DiTConfig, DiTConfig, TurboVAEDConfig]:
    """(base DiT, SR DiT, Turbo-VAED) configs of a benchmark size."""
    if name == "tiny":
        return PRESETS["tiny"], PRESETS["tiny_sr"], TurboVAEDConfig.tiny()
    if name == "mid":
        base = DiTConfig(num_layers=8, hidden_size=1280, head_dim=128, num_heads_kv=2, mm_layers=(0, 1, 6, 7),
                         gelu7_layers=(0, 1))
        sr = base.replace(coords_style="v1", local_attn_layers=(0, 1, 2, 4, 5, 6))
        return base, sr, TurboVAEDConfig()
    raise ValueError(f"unknown benchmark config {name!r}; choose tiny or mid")


def random_dit(cfg: DiTConfig, seed: int, compile_blocks: bool) -> SandwichDiT:
    model = init_random_(SandwichDiT(cfg, Ops()), seed).eval()
    return model.compile_blocks() if compile_blocks else model


@contextmanager
def peak_rss():
    """Yields a dict that receives 'peak_rss_mb' above the starting RSS (sampled every 5 ms)."""
    proc, out, stop = psutil.Process(), {}, threading.Event()
    start = proc.memory_info().rss
    peak = [start]

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()
        out["peak_rss_mb"] = round((peak[0] - start) / 2**20, 1)


def encode_text(workdir: Path) -> tuple[TextConditioning | None, dict]:
    try:
        from happyhorse_core.text import encode_prompt, load_text_stack
        from happyhorse_core.testing.tiny_text import write_tiny_text_folder
    except ImportError as e:  # the text package is another engineer's; older trees lack it
        return None, {"text_encode_s": None, "text_note": f"skipped: happyhorse_core.text not importable ({e})"}
    write_tiny_text_folder(workdir / "text")
    encoder, tokenizer = load_text_stack(workdir / "text", dtype=torch.float32)
    t0 = time.perf_counter()
    with torch.no_grad():
        pos = encode_prompt(encoder, tokenizer, PROMPT).features
        neg = encode_prompt(encoder, tokenizer, NEGATIVE).features
    return TextConditioning(pos, neg), {"text_encode_s": round(time.perf_counter() - t0, 3),
                                        "text_tokens": [pos.shape[0], neg.shape[0]],
                                        "text_note": "tiny random T5Gemma (2 layers, width 3584)"}


def step_timer() -> tuple[Hooks, list[float]]:
    times, last = [], [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    return Hooks(progress=progress), times


def run_config(name: str, geo: ClipGeometry, sr: str | None, text: TextConditioning, args) -> dict:
    base_cfg, sr_cfg, vaed_cfg = dit_configs(name)
    res: dict = {"tokens": geo.video_tokens + geo.audio_frames + text.positive.shape[0]}
    base = random_dit(base_cfg, 0, args.compile)
    hooks, steps = step_timer()
    t0 = time.perf_counter()
    video, audio = generate(base, text, latent_frames=geo.latent_frames, latent_h=geo.latent_h,
                            latent_w=geo.latent_w, audio_frames=geo.audio_frames, opts=SamplingOptions(),
                            hooks=hooks)
    res.update(sample_s=round(time.perf_counter() - t0, 3), sample_step_s=[round(s, 3) for s in steps])
    del base
    base_video = video
    if sr:
        sr_geo = geo.sr_geometry(sr)
        sr_model = random_dit(sr_cfg, 1, args.compile)
        hooks, steps = step_timer()
        t0 = time.perf_counter()
        video, _ = super_resolve(sr_model, video, audio, text, latent_h=sr_geo.latent_h, latent_w=sr_geo.latent_w,
                                 generator=torch.Generator().manual_seed(7), opts=SROptions(steps=args.sr_steps),
                                 hooks=hooks)
        res.update(sr_target=f"{sr_geo.width}x{sr_geo.height}", sr_tokens=sr_geo.video_tokens + geo.audio_frames
                   + text.positive.shape[0], sr_s=round(time.perf_counter() - t0, 3),
                   sr_step_s=[round(s, 3) for s in steps])
        del sr_model
    res.update(decode_costs(vaed_cfg, base_video if args.decode_input == "base" else video, args.skip_one_shot))
    frames = res.pop("_frames")
    t0 = time.perf_counter()
    wave = tiny_codecs.decode_audio(audio)
    res["audio_decode_s"] = round(time.perf_counter() - t0, 3)
    res.update(mux_cost(frames, wave))
    return res


def decode_costs(cfg: TurboVAEDConfig, video: torch.Tensor, skip_one_shot: bool) -> dict:
    """Windowed (reference) decode, and the one-shot decode for comparison, in bf16 like the pipeline."""
    vaed = TurboVAED(cfg)
    init_random_(vaed, 2)
    vaed = vaed.to(torch.bfloat16).eval()
    vaed.decode(video[:, :, :1])  # warm-up: first-call kernel setup is not part of either figure
    out: dict = {"decode_latent": list(video.shape)}
    with peak_rss() as mem:
        t0 = time.perf_counter()
        frames = vaed.decode(video)
    out.update(decode_s=round(time.perf_counter() - t0, 3), decode_peak_rss_mb=mem["peak_rss_mb"])
    if not skip_one_shot:
        with peak_rss() as mem:
            t0 = time.perf_counter()
            vaed.decode_one_shot(video)
        out.update(decode_one_shot_s=round(time.perf_counter() - t0, 3), decode_one_shot_peak_rss_mb=mem["peak_rss_mb"])
    out["_frames"] = ((frames[0].float().permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)  # [F, H, W, 3] in 0..1
    return out


def mux_cost(frames: torch.Tensor, wave: torch.Tensor) -> dict:
    try:
        from happyhorse_core.media.mux import write_mp4
    except ImportError as e:
        return {"mux_s": None, "mux_note": f"skipped: happyhorse_core.media.mux not importable ({e})"}
    from happyhorse_core.geometry import AUDIO_NOMINAL_RATE
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_mp4(Path(tmp) / "bench.mp4", frames, wave, sample_rate=AUDIO_NOMINAL_RATE)
        return {"mux_s": round(time.perf_counter() - t0, 3)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="tiny,mid", help="comma-separated: tiny, mid")
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("--size", default="448x256", help="WIDTHxHEIGHT of the base stage")
    ap.add_argument("--sr", default="540p", help="SR target (540p, 1080p) or 'none'")
    ap.add_argument("--sr-steps", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile the DiT blocks")
    ap.add_argument("--skip-one-shot", action="store_true", help="skip the one-shot Turbo-VAED comparison")
    ap.add_argument("--decode-input", choices=("final", "base"), default="final",
                    help="decode the final (SR) latent, or the base-stage latent (cheaper on CPU)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    geo = ClipGeometry.from_request(width, height, args.seconds)
    sr = None if args.sr == "none" else args.sr
    with tempfile.TemporaryDirectory() as tmp:
        text, text_res = encode_text(Path(tmp))
    if text is None:  # no text package: random features of a typical prompt length
        g = torch.Generator().manual_seed(3)
        text = TextConditioning(torch.randn(96, 3584, generator=g), torch.randn(12, 3584, generator=g))
    summary = {"clip": f"{geo.width}x{geo.height} {geo.seconds} s", "threads": torch.get_num_threads(),
               "compiled": args.compile, **text_res, "configs": {}}
    print(f"{summary['clip']}, {summary['threads']} threads; text: {text_res}")
    for name in args.configs.split(","):
        res = run_config(name.strip(), geo, sr, text, args)
        summary["configs"][name.strip()] = res
        print(f"[{name}] " + ", ".join(f"{k}={v}" for k, v in res.items()))
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
