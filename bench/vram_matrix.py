"""The VRAM guide, measured: which card runs which clip with which weights (README "Memory").

    python bench/vram_matrix.py --dry-run --json          # every planned row, no CUDA needed
    python bench/vram_matrix.py                           # on a CUDA GPU: writes bench/results/vram_matrix_<gpu>.json
    python bench/vram_matrix.py --tiny --out /tmp/m.json  # the whole script on CPU with tiny weights (tests)
    python bench/vram_matrix.py --table FILE [--update-readme]   # the README's VRAM table from a results file

Rows: cards of 12, 16, 24, 32, 48 and 80 GB x 256p / 540p / 1080p (16:9) at 5 s x weights bf16 /
fp8 shared / fp8 all (e4m3fn scaled) x block swap none / auto. A card is emulated on the lent GPU
with torch.cuda.set_per_process_memory_fraction(card / total). The full-size DiT (random weights,
built on the meta device and materialised on the GPU, tensor by tensor) runs through the nodes' code
path: `sampling.pipeline.generate` (distilled, 2 steps; step_s is the second step), with block swap
`auto` sized by `dit.memory_plan.auto_blocks_on_device` from the emulated card's free bytes exactly as
nodes/runtime.auto_blocks does, and Turbo-VAED decodes the 256p clips. Each row records peak VRAM
(torch.cuda.max_memory_allocated), peak host RSS (VmHWM, reset per row), seconds per step and
whether it fit (no out-of-memory error). Rows run cheapest first (256p, then 540p, then 1080p)
until `--budget-s` is spent; rows not run stay `"measured": false`.

Without a swap node the pack's default is ComfyUI's partial loading (nodes/comfy_ops.py), which
needs ComfyUI; here "none" means the whole DiT on the GPU, so "none" rows on cards smaller than
the weights are expected not to fit. `estimate_vram_gb` / `estimate_fit` are the planner's computed
figures (weights + activation estimate), present in every row.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from happyhorse_core.dit import SandwichDiT, fp8  # noqa: E402
from happyhorse_core.dit.config import PRESETS, DiTConfig  # noqa: E402
from happyhorse_core.dit.memory_plan import RunShape, activation_bytes, auto_blocks_on_device  # noqa: E402
from happyhorse_core.dit.offload import BlockSwap, module_bytes  # noqa: E402
from happyhorse_core.dit.ops import Ops  # noqa: E402
from happyhorse_core.geometry import ClipGeometry  # noqa: E402
from happyhorse_core.weights.checks import assign_tensor  # noqa: E402

CARDS_GB = (12, 16, 24, 32, 48, 80)
RESOLUTIONS = ("256p", "540p", "1080p")
SECONDS = 5
WEIGHT_DTYPES = {"bf16": ("bf16", "shared"), "fp8_shared": ("fp8_e4m3fn_scaled", "shared"),
                 "fp8_all": ("fp8_e4m3fn_scaled", "all")}
SWAPS = ("none", "auto")
TEXT_TOKENS = 256  # a typical prompt (the encoder's cap is 640)
GB = 1e9
README_BEGIN, README_END = "<!-- vram-matrix:begin -->", "<!-- vram-matrix:end -->"


def planned_rows(cards=CARDS_GB, resolutions=RESOLUTIONS, dtypes=tuple(WEIGHT_DTYPES), swaps=SWAPS,
                 cfg: DiTConfig | None = None) -> list[dict]:
    """Every row, cheapest resolution first, each with the planner's computed estimate."""
    cfg = cfg or PRESETS["distill"]
    sizes = {d: _sizes(cfg, d) for d in dtypes}
    rows = []
    for res in resolutions:
        run = run_shape(res, cfg)
        act = activation_bytes(cfg, run)
        for card in cards:
            for dtype in dtypes:
                blocks, other = sizes[dtype]
                for swap in swaps:
                    if swap == "none":
                        est = sum(blocks) + other + act
                    else:
                        choice = auto_blocks_on_device(blocks, other, int(card * GB), act)
                        est = choice.peak_block_bytes + other + act
                    rows.append({"card_gb": card, "resolution": res, "seconds": SECONDS, "weight_dtype": dtype,
                                 "block_swap": swap, "measured": False, "fit": None, "peak_vram_gb": None,
                                 "peak_rss_gb": None, "step_s": None, "estimate_vram_gb": round(est / GB, 2),
                                 "estimate_fit": est <= card * GB})
    return rows


def run_shape(resolution: str, cfg: DiTConfig) -> RunShape:
    if cfg.hidden_size < 1024:  # tiny: a few tokens per resolution step
        side = {"256p": 2, "540p": 4, "1080p": 6}[resolution]
        return RunShape.from_latents(2, side, side, 5, 4)
    return RunShape.for_clip(ClipGeometry.from_preset("16:9", resolution, SECONDS), text_tokens=TEXT_TOKENS)


def _ops(dtype: str, device) -> Ops:
    weight_dtype, scope = WEIGHT_DTYPES[dtype]
    return Ops(weight_dtype=weight_dtype, fp8_scope=scope, device=device)


def _sizes(cfg: DiTConfig, dtype: str) -> tuple[list[int], int]:
    model = SandwichDiT(cfg, _ops(dtype, "meta"))
    blocks = [module_bytes(layer) for layer in model.block.layers]
    return blocks, module_bytes(model) - sum(blocks)


def random_dit(cfg: DiTConfig, dtype: str, device: torch.device, seed: int = 0) -> SandwichDiT:
    """A SandwichDiT of `cfg` built on meta and materialised on `device` tensor by tensor, N(0, 1/fan_in)."""
    model = SandwichDiT(cfg, _ops(dtype, "meta"))
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


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def _reset_rss_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(e).lower()


def run_row(row: dict, model: SandwichDiT, cfg: DiTConfig, device: torch.device, vae=None) -> dict:
    """Run one row in place (see module docstring); returns it with the measured fields filled."""
    from happyhorse_core.sampling.pipeline import Hooks, SamplingOptions, TextConditioning, generate
    cuda = device.type == "cuda"
    card = int(row["card_gb"] * GB)
    run = run_shape(row["resolution"], cfg)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(min(1.0, card / torch.cuda.get_device_properties(device).total_memory))
        torch.cuda.reset_peak_memory_stats(device)
    _reset_rss_peak()
    swap, stamps = None, []
    text = TextConditioning(torch.randn(run.text_tokens, cfg.text_in_channels))
    frames = 2 if cfg.hidden_size < 1024 else ClipGeometry.from_preset("16:9", row["resolution"], SECONDS).latent_frames
    lh = lw = None
    if cfg.hidden_size < 1024:
        lh = lw = 2 * int((run.video_tokens // frames) ** 0.5)
    else:
        g = ClipGeometry.from_preset("16:9", row["resolution"], SECONDS)
        lh, lw = g.latent_h, g.latent_w
    try:
        if row["block_swap"] == "auto":
            blocks = [module_bytes(layer) for layer in model.block.layers]
            other = module_bytes(model) - sum(blocks)
            used = torch.cuda.memory_allocated(device) if cuda else 0
            choice = auto_blocks_on_device(blocks, other, card - used, activation_bytes(cfg, run))
            row["blocks_on_device"] = choice.blocks_on_device
            swap = BlockSwap(model, choice.blocks_on_device, device)
        else:
            model.to(device)
        hooks = Hooks(progress=lambda done, total: stamps.append(time.perf_counter()))
        stamps.append(time.perf_counter())
        v, _ = generate(model, text, latent_frames=frames, latent_h=lh, latent_w=lw, audio_frames=run.audio_frames,
                        opts=SamplingOptions(mode="distilled", steps=2), hooks=hooks, device=device)
        if vae is not None and row["resolution"] == "256p":
            from happyhorse_core.sampling.latents import video_from_model
            vae.decode(video_from_model(v).to(device), output_device="cpu", device=device)
        if cuda:
            torch.cuda.synchronize(device)
        row.update(fit=True, step_s=round(stamps[-1] - stamps[-2], 3) if len(stamps) >= 3 else None)
    except (RuntimeError, MemoryError) as e:
        if not _is_oom(e):
            raise
        row.update(fit=False, error=str(e).splitlines()[0][:160])
    finally:
        if swap is not None:
            swap.remove()
            model.to("cpu")  # resident blocks and the non-block weights back to RAM, as nodes/runtime.placed does
        if cuda:
            row["peak_vram_gb"] = round(torch.cuda.max_memory_allocated(device) / GB, 2)
            torch.cuda.set_per_process_memory_fraction(1.0)
        row["peak_rss_gb"] = round(_rss("VmHWM:") / GB, 2)
        row["measured"] = True
    return row


def run_matrix(rows: list[dict], cfg: DiTConfig, device: torch.device, budget_s: float, vae=None) -> list[dict]:
    """Build each weight dtype once and run its rows (GPU-resident first, then swap auto from RAM)."""
    start = time.perf_counter()
    for dtype in dict.fromkeys(r["weight_dtype"] for r in rows):
        model = random_dit(cfg, dtype, device)
        for swap in SWAPS:
            if swap == "auto":
                model.to("cpu")  # the loader's placement: system RAM; block swap streams from there
            for row in (r for r in rows if r["weight_dtype"] == dtype and r["block_swap"] == swap):
                if time.perf_counter() - start > budget_s:
                    return rows
                run_row(row, model, cfg, device, vae)
                print(json.dumps(row), flush=True)
        del model
    return rows


def gpu_slug(name: str) -> str:
    """'NVIDIA H200' -> 'h200'."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and w not in ("nvidia", "geforce", "tesla")]
    return "_".join(words) or "gpu"


def table(results: dict) -> str:
    """The README's VRAM table: per card and resolution, the first configuration that fits.

    Measured rows win; otherwise the planner's estimate, labelled as such."""
    rows = results["rows"]
    order = [(d, s) for d in WEIGHT_DTYPES for s in SWAPS]
    label = {"bf16": "bf16", "fp8_shared": "fp8 shared", "fp8_all": "fp8 all"}
    lines = ["| card | " + " | ".join(f"{r} 5 s" for r in RESOLUTIONS) + " |",
             "|---|" + "---|" * len(RESOLUTIONS)]
    for card in sorted({r["card_gb"] for r in rows}, reverse=True):
        cells = []
        for res in RESOLUTIONS:
            cands = [r for r in rows if r["card_gb"] == card and r["resolution"] == res]
            cands.sort(key=lambda r: order.index((r["weight_dtype"], r["block_swap"])))
            measured = next((r for r in cands if r["measured"] and r["fit"]), None)
            planned = next((r for r in cands if not r["measured"] and r["estimate_fit"]), None)
            pick = measured or planned
            if pick is None:
                cells.append("does not fit" + (" (measured)" if all(r["measured"] for r in cands) else " (planned)"))
                continue
            what = label[pick["weight_dtype"]] + (" + block swap auto" if pick["block_swap"] == "auto" else "")
            if pick["measured"]:
                cells.append(f"{what}: measured {pick['peak_vram_gb']} GB, {pick['step_s']} s/step")
            else:
                cells.append(f"{what}: planned ~{pick['estimate_vram_gb']} GB (not measured)")
        lines.append(f"| {card} GB | " + " | ".join(cells) + " |")
    n = sum(r["measured"] for r in rows)
    lines.append("")
    lines.append(f"Generated by `python bench/vram_matrix.py --table {results.get('source', 'FILE')}`: "
                 f"{n} of {len(rows)} rows measured ({results.get('device') or 'no GPU'}); the others are the "
                 "planner's computed estimate (weights + activations), not a measurement.")
    return "\n".join(lines)


def update_readme(text: str, readme: Path = REPO / "README.md") -> None:
    body = readme.read_text(encoding="utf-8")
    if README_BEGIN not in body or README_END not in body:
        raise SystemExit(f"{readme} has no {README_BEGIN} ... {README_END} markers")
    head, rest = body.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_BEGIN}\n{text}\n{README_END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="print the planned rows; needs no GPU")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line")
    ap.add_argument("--tiny", action="store_true", help="tiny random weights on the CPU (tests the script)")
    ap.add_argument("--out", type=Path, help="results file (default bench/results/vram_matrix_<gpu>.json)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting rows after this many seconds")
    ap.add_argument("--no-decode", action="store_true", help="skip the Turbo-VAED decode of 256p clips")
    ap.add_argument("--cards", default=",".join(map(str, CARDS_GB)), help="card sizes in GB, comma separated")
    ap.add_argument("--resolutions", default=",".join(RESOLUTIONS), help="subset of " + ",".join(RESOLUTIONS))
    ap.add_argument("--dtypes", default=",".join(WEIGHT_DTYPES), help="subset of " + ",".join(WEIGHT_DTYPES))
    ap.add_argument("--table", type=Path, help="print the README table generated from this results file")
    ap.add_argument("--update-readme", action="store_true", help="with --table: write it into README.md")
    args = ap.parse_args(argv)

    if args.table:
        results = json.loads(args.table.read_text(encoding="utf-8"))
        results.setdefault("source", str(args.table.relative_to(REPO)) if args.table.is_absolute()
                           and REPO in args.table.parents else str(args.table))
        text = table(results)
        if args.update_readme:
            update_readme(text)
        print(text)
        return 0

    cfg = PRESETS["tiny"] if args.tiny else PRESETS["distill"]
    cards = tuple(int(c) for c in args.cards.split(","))
    resolutions = tuple(r for r in args.resolutions.split(","))
    dtypes = tuple(d for d in args.dtypes.split(","))
    bad = [r for r in resolutions if r not in RESOLUTIONS] + [d for d in dtypes if d not in WEIGHT_DTYPES]
    if bad:
        ap.error(f"unknown resolutions / dtypes {bad}; choose from {RESOLUTIONS} and {tuple(WEIGHT_DTYPES)}")
    rows = planned_rows(cards, resolutions, dtypes, cfg=cfg)
    if args.dry_run:
        results = {"device": None, "rows": rows}
    else:
        if args.tiny:
            device, name = torch.device("cpu"), "cpu_tiny"
        elif torch.cuda.is_available():
            device = torch.device("cuda")
            name = torch.cuda.get_device_name(device)
        else:
            print("no CUDA GPU: use --dry-run to see the plan, or --tiny to run the script on the CPU", file=sys.stderr)
            return 2
        vae = None
        if not args.no_decode:
            from happyhorse_core.decoders import TurboVAED, TurboVAEDConfig
            vae = TurboVAED(TurboVAEDConfig.tiny() if args.tiny else TurboVAEDConfig()).to(device=device,
                                                                                          dtype=torch.bfloat16)
        run_matrix(rows, cfg, device, args.budget_s, vae)
        results = {"device": name, "torch": torch.__version__, "rows": rows}
        out = args.out or REPO / "bench" / "results" / f"vram_matrix_{gpu_slug(name)}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    if args.json:
        print(json.dumps(results))
    else:
        for r in results["rows"]:
            print(f"{r['card_gb']:3d} GB {r['resolution']:>5s} {r['weight_dtype']:10s} swap {r['block_swap']:4s} "
                  f"est {r['estimate_vram_gb']:6.2f} GB fit(est) {r['estimate_fit']!s:5s} "
                  f"measured {r['measured']!s:5s} fit {r['fit']} peak {r['peak_vram_gb']} GB step {r['step_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
