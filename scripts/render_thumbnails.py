"""Render the template-browser pictures workflows/<name>.jpg, one per shipped workflow.

    .venv/bin/python scripts/render_thumbnails.py            # the missing ones
    .venv/bin/python scripts/render_thumbnails.py --force    # all of them

ComfyUI's template browser (frontend 1.32) shows /api/workflow_templates/<pack>/<name>.jpg for a custom
node's template <name>.json, so each picture sits next to its workflow. Each one is rendered from a
real run of the same pipeline the workflow uses (python -m happyhorse_core.generate --tiny: the pack's
tiny random weights and stand-in codecs, 1 s, 16:9): distilled or base sampling, the SR stage (540p
here) when the workflow has one, its start image and voice recording when it loads them. The weights
are random, so the frames are noise; the picture shows the middle frame, with the start image on the
left for the image workflows.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from workflow_specs import ASSETS, PROMPT, START_IMAGE, VOICE_TRACK, Workflow, all_workflows  # noqa: E402

WIDTH, HEIGHT = 512, 288  # 16:9 card


def cli_args(wf: Workflow) -> list[str]:
    """generate --tiny flags that follow the workflow: mode, SR stage, start image, voice."""
    types = {n.type for n in wf.nodes}
    args = ["--tiny", "--seconds", "1", "--aspect", "16:9", "--prompt", PROMPT]
    if any(n.type == "HappyHorseSampler" and n.widgets.get("mode") == "base" for n in wf.nodes):
        args += ["--mode", "base", "--steps", "4"]  # 4 of the 32 steps: a picture, not a clip
    if "HappyHorseSuperResolution" in types:
        args += ["--resolution", "540p"]
    if "LoadImage" in types:
        args += ["--image", str(ASSETS / START_IMAGE)]
    if "LoadAudio" in types:
        args += ["--audio", str(ASSETS / VOICE_TRACK)]
    return args


def write_thumbnail(mp4: Path, dst: Path, start_image: Path | None = None) -> Path:
    """The middle frame of `mp4` (right half next to the start image when given) as a WIDTHxHEIGHT JPEG."""
    with av.open(str(mp4)) as box:
        frames = list(box.decode(video=0))
    middle = frames[len(frames) // 2]
    if start_image is None:
        rgb = middle.to_ndarray(format="rgb24", width=WIDTH, height=HEIGHT)
    else:
        with av.open(str(start_image)) as box:
            still = next(box.decode(video=0))
        half = WIDTH // 2
        scaled_w = max(half, round(still.width * HEIGHT / still.height))  # keep the picture's aspect, crop the sides
        left = still.to_ndarray(format="rgb24", width=scaled_w, height=HEIGHT)
        x0 = (scaled_w - half) // 2
        rgb = np.concatenate([left[:, x0:x0 + half],
                              middle.to_ndarray(format="rgb24", width=WIDTH - half, height=HEIGHT)], axis=1)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuvj420p")
    with av.open(str(dst), "w", format="image2") as out:
        stream = out.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuvj420p"
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return dst


def render(wf: Workflow, dst: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="hh_thumb_") as tmp:
        mp4 = Path(tmp) / "clip.mp4"
        cmd = [sys.executable, "-m", "happyhorse_core.generate", *cli_args(wf), "--out", str(mp4)]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{wf.name}: generate failed:\n{proc.stderr[-2000:]}")
        uses_image = any(n.type == "LoadImage" for n in wf.nodes)
        return write_thumbnail(mp4, dst, ASSETS / START_IMAGE if uses_image else None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="re-render pictures that exist")
    ap.add_argument("--only", action="append", default=[], help="workflow name (repeatable)")
    args = ap.parse_args(argv)
    for wf in all_workflows():
        if not any(n.type == "HappyHorseModelLoader" for n in wf.nodes):
            continue  # the hosted workflows run on Model Studio: nothing to render here
        dst = REPO / "workflows" / f"{wf.name}.jpg"
        if (args.only and wf.name not in args.only) or (dst.is_file() and not args.force):
            continue
        print(f"wrote {render(wf, dst).relative_to(REPO)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
