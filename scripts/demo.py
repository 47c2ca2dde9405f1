"""The main job: a real ComfyUI runs the default text-to-video+audio workflow on tiny built-in weights.

    .venv/bin/python scripts/demo.py [--out out/happyhorse_demo.mp4] [--workflow "workflows/HappyHorse Text to Video 256p.json"]

Writes the tiny random weights (happyhorse_core.testing.tiny_models) into .cache/demo/base/models, starts
ComfyUI 0.3.75 (installed by scripts/setup_comfyui.sh) with this repo as a custom-node pack,
converts the workflow to the API format, points its file widgets at the tiny files, runs it and
copies the mp4 it saved to --out. The clip is noise: the weights are random stand-ins.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from comfyui_server import ComfyUIServer  # noqa: E402
from workflow_convert import ui_to_api  # noqa: E402

from happyhorse_core.media.mux import probe_mp4  # noqa: E402
from happyhorse_core.testing.tiny_models import SAO_VAE_FILE, WAN22_VAE_FILE, tiny_substitute, write_tiny_models  # noqa: E402
from happyhorse_core.testing.tiny_native_vaes import cached_vae_files  # noqa: E402


def prepare_models(models: Path, cache: Path) -> None:
    stamp = models / ".happyhorse-tiny"
    if stamp.is_file():
        return
    write_tiny_models(models, native_vaes=False)
    native = cached_vae_files(cache / "tiny_native")
    for key, name in (("wan22", WAN22_VAE_FILE), ("stable_audio", SAO_VAE_FILE)):
        dst = models / "vae" / name
        if not dst.exists():
            try:
                os.link(native[key], dst)
            except OSError:
                shutil.copyfile(native[key], dst)
    stamp.write_text("tiny random weights for the demo\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "out" / "happyhorse_demo.mp4"))
    ap.add_argument("--workflow", default=str(REPO / "workflows" / "HappyHorse Text to Video 256p.json"))
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_HOME", str(REPO / ".cache" / "comfyui")))
    args = ap.parse_args()
    cache = REPO / ".cache"
    base = cache / "demo" / "base"
    t0 = time.monotonic()
    prepare_models(base / "models", cache)
    print(f"[demo] tiny weights ready in {base / 'models'} ({time.monotonic() - t0:.1f} s)")
    srv = ComfyUIServer(args.comfyui, custom_nodes={"ComfyUI-HappyHorse": REPO}, base_dir=base)
    srv.start()
    try:
        print(f"[demo] ComfyUI up at {srv.url} in {srv.start_seconds:.1f} s")
        if srv.import_failures():
            print(srv.log_tail(), file=sys.stderr)
            return 1
        workflow = json.loads(Path(args.workflow).read_text())
        graph = tiny_substitute(ui_to_api(workflow, srv.object_info()))
        result = srv.run_prompt(graph, timeout=1800)
        files = [f for f in srv.output_files(result) if f.suffix == ".mp4"]
        if not files:
            print(f"[demo] the workflow saved no mp4: {result['outputs']}", file=sys.stderr)
            return 1
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[0], out)
        info = probe_mp4(out)
        print(f"[demo] ran in {result['seconds']:.1f} s -> {out}")
        print(f"[demo] {info['video_codec']} {info['width']}x{info['height']} {info['frames']} frames "
              f"@ {info['fps']} fps ({info['video_duration_s']:.2f} s), {info['audio_codec']} "
              f"{info['sample_rate']} Hz ({info['audio_duration_s']:.2f} s)")
        return 0
    finally:
        srv.stop()


if __name__ == "__main__":
    sys.exit(main())
