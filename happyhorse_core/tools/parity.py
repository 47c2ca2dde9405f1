"""Parity command: run our DiT on a golden case and compare with the reference outputs.

    python -m happyhorse_core.tools.parity CASE.safetensors CASE.json --out PRED.safetensors
    python -m happyhorse_core.tools.parity --manifest distill

The case format is the one of ../shared/golden/README.md: `arch_config` (+ `data_proxy_config`)
in the JSON; the reference state_dict under its own key names and `input.*` tensors in the
safetensors file. The inputs are packed HERE (`packed.*` is never read). For each variant
(`t2v`, plus `i2v` when `input.image_latent` exists) both numerics run: our default bf16-compute
path (`output.*`) and the all-fp32 path (`output_fp32.*`). Exit code 1 if a tensor is off
beyond the case's tolerances.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..dit.config import config_from_reference, preset
from ..dit import SandwichDiT
from ..dit.ops import Ops
from ..dit.sequence import output_rows, pack, unpack
from ..weights.safetensors_io import write_safetensors

MODEL_PREFIXES = ("adapter.", "block.", "final_")
DEFAULT_TOL = {"output_fp32": {"atol": 1e-4, "rtol": 1e-4},
               "output_bf16_faithful": {"atol": 5e-2, "rtol": 5e-2, "mean_abs_max": 5e-3}}


def model_from_case(tensors: dict[str, torch.Tensor], meta: dict) -> SandwichDiT:
    proxy = meta.get("data_proxy_config", {})
    cfg = config_from_reference(meta["arch_config"], coords_style=proxy.get("coords_style", "v2"),
                                frame_receptive_field=proxy.get("frame_receptive_field", 11))
    model = SandwichDiT(cfg, Ops(device="meta"))
    state = {k: v for k, v in tensors.items() if k.startswith(MODEL_PREFIXES)}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def case_inputs(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """{variant: (video latent, audio latent, text features [n, Dt])} from the `input.*` tensors."""
    n_text = int(tensors["input.txt_feat_len"].reshape(-1)[0])
    text = tensors["input.txt_feat"][0, :n_text]
    video, audio = tensors["input.latent_video"], tensors["input.latent_audio"]
    out = {"t2v": (video, audio, text)}
    if "input.image_latent" in tensors:
        i2v = video.clone()
        i2v[:, :, :1] = tensors["input.image_latent"]
        out["i2v"] = (i2v, audio, text)
    return out


@torch.no_grad()
def run_case(model: SandwichDiT, inputs: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    model.compute_dtype = dtype
    tag = "output" if dtype == torch.bfloat16 else "output_fp32"
    out: dict[str, torch.Tensor] = {}
    for variant, (video, audio, text) in inputs.items():
        seq = pack(video, audio, text, style=model.config.coords_style)
        v_tok, a_tok = model(seq.video, seq.audio, seq.text, seq.coords, seq.tokens_per_frame)
        v, a = unpack(v_tok, a_tok, seq)
        out[f"{variant}.{tag}.x_out"] = output_rows(v_tok, a_tok, seq.text.shape[0])
        out[f"{variant}.{tag}.video"] = v
        out[f"{variant}.{tag}.audio"] = a
    return out


def compare(pred: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], tolerances: dict) -> bool:
    ok = True
    for name, p in sorted(pred.items()):
        if name not in expected:
            continue
        e = expected[name].float()
        diff = (p.float() - e).abs()
        tol = tolerances["output_fp32" if ".output_fp32." in name else "output_bf16_faithful"]
        within = bool(torch.all(diff <= tol["atol"] + tol["rtol"] * e.abs()))
        # The mean-abs bound is defined on the raw DiT output x_out (golden README's statistics).
        mean_ok = not name.endswith("x_out") or diff.mean().item() <= tol.get("mean_abs_max", float("inf"))
        ok &= within and mean_ok
        flag = "ok" if within and mean_ok else "FAIL"
        print(f"{name:32s} max_abs={diff.max().item():.3e} mean_abs={diff.mean().item():.3e}  {flag}")
    return ok


def manifest(name: str) -> dict:
    """Every state_dict key of our model at a full-size preset, built on the meta device.

    Same layout as ../shared/golden/dit_full_manifest.json: config, derived, counts, keys.
    """
    cfg = preset(name)
    sd = SandwichDiT(cfg, Ops(device="meta")).state_dict()
    keys = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in sd.items()}
    by_dtype: dict[str, int] = {}
    for k, v in sd.items():
        by_dtype[keys[k]["dtype"]] = by_dtype.get(keys[k]["dtype"], 0) + v.numel()
    config = {"num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size, "head_dim": cfg.head_dim,
              "num_query_groups": cfg.num_heads_kv, "video_in_channels": cfg.video_in_channels,
              "audio_in_channels": cfg.audio_in_channels, "text_in_channels": cfg.text_in_channels,
              "mm_layers": list(cfg.mm_layers), "local_attn_layers": list(cfg.local_attn_layers),
              "enable_attn_gating": cfg.enable_attn_gating, "gelu7_layers": list(cfg.gelu7_layers),
              "num_heads_q": cfg.num_heads_q, "num_heads_kv": cfg.num_heads_kv, "coords_style": cfg.coords_style}
    derived = {"num_heads_q": cfg.num_heads_q, "num_heads_kv": cfg.num_heads_kv,
               "swiglu7_intermediate": cfg.swiglu7_intermediate, "gelu7_intermediate": cfg.gelu7_intermediate,
               "rope_bands": cfg.rope_bands, "rotary_dims_per_head": cfg.rotary_dims}
    return {"preset": name, "config": config, "derived": derived, "num_tensors": len(keys),
            "num_elements": sum(v.numel() for v in sd.values()), "elements_by_dtype": by_dtype, "keys": keys}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m happyhorse_core.tools.parity", description=__doc__.split("\n\n")[0])
    ap.add_argument("case", nargs="?", help="CASE.safetensors (reference state_dict + input.* tensors)")
    ap.add_argument("meta", nargs="?", help="CASE.json with arch_config")
    ap.add_argument("--out", help="write our predictions to this safetensors file")
    ap.add_argument("--manifest", metavar="PRESET", help="print our full-size key manifest as JSON and exit")
    args = ap.parse_args(argv)
    if args.manifest:
        print(json.dumps(manifest(args.manifest), indent=1))
        return 0
    if not (args.case and args.meta):
        ap.error("give CASE.safetensors and CASE.json, or --manifest PRESET")
    tensors = load_file(args.case)
    meta = json.loads(Path(args.meta).read_text())
    model = model_from_case(tensors, meta)
    inputs = case_inputs(tensors)
    pred = {**run_case(model, inputs, torch.bfloat16), **run_case(model, inputs, torch.float32)}
    if args.out:
        write_safetensors(args.out, {k: v.contiguous() for k, v in pred.items()})
    tol = {**DEFAULT_TOL, **meta.get("suggested_tolerances", {})}
    has_expected = any(k in tensors for k in pred)
    if not has_expected:
        print("case holds no expected outputs; predictions written" if args.out else "case holds no expected outputs")
        return 0
    return 0 if compare(pred, tensors, tol) else 1


if __name__ == "__main__":
    sys.exit(main())
