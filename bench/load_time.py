"""Load time and peak host memory of `load_dit` on a ~2 GB synthetic checkpoint in each layout.

    python bench/load_time.py [--json] [--workdir DIR] [--keep]

The model is the real structure at 16 layers x 2048 (1.07 B parameters: 2.15 GB in bf16 with
fp32 norms/embedders). Files written: bf16 single file, the same as 4 HF shards + index, an
fp32 single file (4.3 GB) and an fp8 e4m3fn scaled file (every block linear, as the published
fp8 repacks do). Each load runs in a fresh process; peak RSS growth is VmHWM (reset just before
the load) minus the RSS before it, compared with the bound final model bytes + largest tensor.
The files were just written, so reads come from a warm page cache (disk speed not measured).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from happyhorse_core.dit.config import DiTConfig  # noqa: E402
from happyhorse_core.tools.convert_fp8 import convert  # noqa: E402
from happyhorse_core.dit import SandwichDiT  # noqa: E402
from happyhorse_core.dit.ops import Ops  # noqa: E402
from happyhorse_core.weights.safetensors_io import open_checkpoint, write_safetensors_stream  # noqa: E402

CFG = DiTConfig(num_layers=16, hidden_size=2048, head_dim=128, num_heads_kv=4, mm_layers=(0, 1, 14, 15),
                gelu7_layers=(0, 1))
LOADS = [("bf16 single file", "bf16.safetensors", "bf16"), ("bf16 4 shards + index", "sharded", "bf16"),
         ("fp32 single file -> bf16", "fp32.safetensors", "bf16"),
         ("fp32 single file -> fp8 shared (quantize at load)", "fp32.safetensors", "fp8_e4m3fn_scaled"),
         ("fp8 scaled file -> fp8 all (keep bytes)", "fp8.safetensors", "fp8_e4m3fn_scaled:all"),
         ("fp8 scaled file -> bf16 (dequantize)", "fp8.safetensors", "bf16")]
CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[3])
from happyhorse_core.weights.loading import load_dit
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
dtype, _, scope = sys.argv[2].partition(":")
base = rss("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")
t = time.perf_counter()
model = load_dit(sys.argv[1], variant="distill", weight_dtype=dtype, fp8_scope=scope or "shared")
sec = time.perf_counter() - t
final = sum(x.numel() * x.element_size() for x in list(model.parameters()) + list(model.buffers()))
print(json.dumps({"seconds": sec, "peak_growth": rss("VmHWM:") - base, "final_bytes": final}))
"""


def write_files(work: Path) -> dict[str, float]:
    """The four layouts; returns seconds spent writing each."""
    meta = SandwichDiT(CFG, Ops(device="meta")).state_dict()
    specs = [(k, v.dtype, tuple(v.shape)) for k, v in meta.items()]
    g = torch.Generator().manual_seed(0)

    def random(key: str) -> torch.Tensor:
        shape, dtype = meta[key].shape, meta[key].dtype
        std = 0.1 if len(shape) == 1 else shape[1] ** -0.5
        return (torch.randn(shape, generator=g, dtype=dtype) * std).to(dtype)

    times = {}
    t = time.perf_counter()
    write_safetensors_stream(work / "bf16.safetensors", specs, random)
    times["bf16.safetensors"] = time.perf_counter() - t
    src = open_checkpoint(work / "bf16.safetensors")
    t = time.perf_counter()
    write_safetensors_stream(work / "fp32.safetensors", [(k, torch.float32, s) for k, _, s in specs],
                             lambda k: src.read(k).float())
    times["fp32.safetensors"] = time.perf_counter() - t
    t = time.perf_counter()
    _write_shards(src, specs, work / "sharded", 4)
    times["sharded"] = time.perf_counter() - t
    t = time.perf_counter()
    convert(work / "bf16.safetensors", work / "fp8.safetensors", "fp8_e4m3fn_scaled", "all", variant="distill")
    times["fp8.safetensors"] = time.perf_counter() - t
    return times


def _write_shards(src, specs, folder: Path, n: int) -> None:
    folder.mkdir()
    weight_map = {}
    for i in range(n):
        name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = specs[i::n]
        write_safetensors_stream(folder / name, part, src.read)
        weight_map.update({k: name for k, _, _ in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def measure(work: Path) -> list[dict]:
    rows = []
    for label, name, dtype in LOADS:
        path = work / name
        ckpt = open_checkpoint(path)
        largest = max(e.nbytes for e in ckpt.entries.values())
        size = sum(f.stat().st_size for f in ckpt.files)
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), dtype, str(ROOT)], capture_output=True,
                             text=True, timeout=300)
        if out.returncode:
            raise RuntimeError(f"load of {path} failed:\n{out.stderr}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        bound = r["final_bytes"] + largest
        rows.append({"layout": label, "file_bytes": size, "seconds": round(r["seconds"], 2),
                     "peak_rss_growth": r["peak_growth"], "final_model_bytes": r["final_bytes"],
                     "largest_tensor_bytes": largest, "peak_over_bound": round(r["peak_growth"] / bound, 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write the files (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hh_load_", dir=args.workdir))
    start = time.perf_counter()
    try:
        writes = write_files(work)
        rows = measure(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("writing: " + ", ".join(f"{k} {v:.1f} s" for k, v in writes.items()))
    print(f"{'layout':52s} {'file GB':>8s} {'load s':>7s} {'peak RSS+ GB':>13s} {'model GB':>9s} {'peak/bound':>10s}")
    for r in rows:
        print(f"{r['layout']:52s} {r['file_bytes'] / 1e9:8.2f} {r['seconds']:7.2f} {r['peak_rss_growth'] / 1e9:13.2f} "
              f"{r['final_model_bytes'] / 1e9:9.2f} {r['peak_over_bound']:10.3f}")
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        print(json.dumps({"writes_seconds": writes, "loads": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
