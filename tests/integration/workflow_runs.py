"""Running the shipped workflows on the tiny weights: model/input files for the server, CPU-size widget
shrinks, and the mp4 checks.

The tiny weights are also laid out under the names the shipped workflows use, in the release layouts
(install_release_layouts): sharded folders with an index, the T5Gemma folder, the Turbo-VAED .ckpt, and
symlinks for the native VAEs, so the shipped file names run as they are and those code paths are covered.
Used by test_workflows_run.py; only widget values are changed, never the graph, so what runs is what ships.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import struct
import sys
import wave
from pathlib import Path

import av
import numpy as np
import torch
from safetensors.torch import load_file

from comfy_harness import CACHE, REPO, place_file
from workflow_convert import ui_to_api

if str(REPO / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO / "scripts"))  # workflow_specs / build_workflows live there
from happyhorse_core.testing.tiny_models import (DIT_FILES, SAO_VAE_FILE, TEXT_ENCODER_FILE, TURBO_VAED_FILE,  # noqa: E402
                                         WAN22_VAE_FILE, write_tiny_models)
from happyhorse_core.testing.tiny_lora import write_tiny_lora  # noqa: E402
from happyhorse_core.testing.tiny_native_vaes import cached_vae_files  # noqa: E402
from make_workflow_assets import write_png as png_file  # noqa: E402
from weight_files import save_sharded  # noqa: E402
from workflow_specs import ASSETS, FILES, START_IMAGE, VOICE_TRACK  # noqa: E402

FPS = 25
FRAME_S = 1 / FPS
LOADER_FILE_WIDGETS = {"HappyHorseModelLoader": "model_name", "HappyHorseTextEncoderLoader": "encoder_name",
                       "HappyHorseTurboVAEDLoader": "vae_name", "VAELoader": "vae_name",
                       "HappyHorseAudioVAELoader": "vae_name", "LoraLoaderModelOnly": "lora_name",
                       "HappyHorseLoraLoader": "lora_name"}
DOCUMENTED_NAMES = {f.name for f in FILES.values()}  # what the shipped loaders may name


def install_tiny_models(models_dir: Path) -> None:
    """Tiny DiTs / T5Gemma / Turbo-VAED (written once per base dir), the native VAEs (hard links), and
    the same weights under the shipped workflows' names (install_release_layouts)."""
    stamp = models_dir / ".happyhorse-tiny"
    if not stamp.is_file():
        write_tiny_models(models_dir, native_vaes=False)
        stamp.write_text("tiny random weights for the workflow tests\n")
    layouts = models_dir / ".happyhorse-release-layouts"
    if not layouts.is_file():
        install_release_layouts(models_dir)
        layouts.write_text("tiny weights under the shipped workflows' file names\n")
    lora = models_dir / FILES["lora"].folder / FILES["lora"].name
    if not lora.is_file():
        lora.parent.mkdir(parents=True, exist_ok=True)
        write_tiny_lora(lora)
    native = cached_vae_files(CACHE / "tiny_native")
    place_file(native["wan22"], models_dir / "vae" / WAN22_VAE_FILE)
    place_file(native["stable_audio"], models_dir / "vae" / SAO_VAE_FILE)


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(os.path.relpath(target, link.parent))


def install_release_layouts(models_dir: Path) -> None:
    """The tiny weights under FILES' names: sharded DiT folders, the T5Gemma folder (sharded, with config and
    tokenizer), turbo_vae/checkpoint-340000.ckpt (the released pickle layout) and links for the native VAEs
    (the Stable Audio name is a VAE-only file here; the full-checkpoint read is tested on its own)."""
    dm, te, vae = models_dir / "diffusion_models", models_dir / "text_encoders", models_dir / "vae"
    for key, variant in (("distill", "distill"), ("base", "base"), ("sr_1080p", "sr_1080p")):
        folder = dm / FILES[key].name.removesuffix("/ (sharded)")
        save_sharded(load_file(str(dm / DIT_FILES[variant])), folder, shards=2, metadata={"format": "pt"})
    tiny_te = te / Path(TEXT_ENCODER_FILE).parent
    folder = te / FILES["text_encoder"].name.removesuffix("/ (sharded)")
    save_sharded(load_file(str(te / TEXT_ENCODER_FILE)), folder, shards=2, metadata={"format": "pt"})
    for f in tiny_te.iterdir():
        if not f.name.endswith(".safetensors"):
            shutil.copy2(f, folder / f.name)
    ckpt = vae / FILES["turbo_vaed"].name
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    decoder = load_file(str(vae / TURBO_VAED_FILE))
    torch.save({"ema_state_dict": {"module." + k: v for k, v in decoder.items()}, "global_step": 340000}, ckpt)
    _link(vae / WAN22_VAE_FILE, vae / FILES["wan22_vae"].name)
    _link(vae / SAO_VAE_FILE, models_dir / FILES["sao_vae"].folder / FILES["sao_vae"].name)


def write_png(path: Path, width: int = 320, height: int = 240) -> Path:
    """An RGB gradient PNG [height, width]: red rises across, green down, blue 96 (make_workflow_assets' writer)."""
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = np.arange(width) * 255 // width
    rgb[..., 1] = (np.arange(height) * 255 // height)[:, None]
    rgb[..., 2] = 96
    return png_file(path, rgb)


def write_wav(path: Path, seconds: float = 1.5, rate: int = 22050) -> Path:
    """A mono 16-bit sine sweep (a 'voice' stand-in) at an odd rate, so the node must resample."""
    n = int(seconds * rate)
    frames = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * (180 + 120 * i / n) * i / rate)))
                      for i in range(n))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return path


def install_inputs(input_dir: Path) -> None:
    """The shipped example inputs (workflows/assets/), as a user copies them to ComfyUI/input/."""
    input_dir.mkdir(parents=True, exist_ok=True)
    for name in (START_IMAGE, VOICE_TRACK):
        if not (input_dir / name).exists():
            shutil.copy2(ASSETS / name, input_dir / name)


def to_tiny(api: dict) -> dict:
    """Check that every loader names a documented file (FILES; installed over the tiny weights by
    install_release_layouts, so the names stay as shipped). Returns a copy."""
    out = {}
    for nid, node in api.items():
        node = {**node, "inputs": dict(node["inputs"])}
        widget = LOADER_FILE_WIDGETS.get(node["class_type"])
        if widget and node["inputs"][widget] not in DOCUMENTED_NAMES:
            raise AssertionError(f"node {nid} ({node['class_type']}) loads {node['inputs'][widget]!r}, which is not "
                                 f"one of the documented files {sorted(DOCUMENTED_NAMES)}")
        out[nid] = node
    return out


def set_widgets(api: dict, class_type: str, **values) -> dict:
    """Set widget values on every node of a type (the node must have those inputs already)."""
    hit = False
    for node in api.values():
        if node["class_type"] == class_type:
            missing = set(values) - set(node["inputs"])
            assert not missing, f"{class_type} has no inputs {missing}"
            node["inputs"].update(values)
            hit = True
    assert hit, f"no {class_type} node in the graph"
    return api


def shipped_api(name: str, info: dict, shrink: dict | None = None) -> dict:
    """The shipped workflows/<name>.json as an API prompt (its file names checked by to_tiny) with CPU-size
    widgets: shrink {class_type: {widget: value}}."""
    api = to_tiny(ui_to_api(json.loads((REPO / "workflows" / f"{name}.json").read_text()), info))
    for class_type, values in (shrink or {}).items():
        set_widgets(api, class_type, **values)
    return api


def node_id(api: dict, class_type: str) -> str:
    """The id of the one node of `class_type` in an API prompt."""
    (nid,) = [k for k, v in api.items() if v["class_type"] == class_type]
    return nid


def nodes_of(api: dict, class_type: str) -> list[dict]:
    return [n for n in api.values() if n["class_type"] == class_type]


def read_mp4(path: Path) -> dict:
    """Codecs, fps, decoded frame count and size, and both stream durations (PyAV)."""
    with av.open(str(path)) as box:
        vs, aus = box.streams.video[0], box.streams.audio[0]
        info = {"video_codec": vs.codec_context.name, "fps": vs.average_rate,
                "width": vs.codec_context.width, "height": vs.codec_context.height,
                "audio_codec": aus.codec_context.name, "sample_rate": aus.codec_context.sample_rate}
        info["frames"] = sum(1 for _ in box.decode(video=0))
    with av.open(str(path)) as box:
        aus = box.streams.audio[0]
        if aus.duration is not None:  # mp4 edit list: AAC priming excluded
            info["audio_s"] = float(aus.duration * aus.time_base)
        else:
            info["audio_s"] = sum(f.samples for f in box.decode(audio=0)) / info["sample_rate"]
    info["video_s"] = info["frames"] / float(info["fps"])
    return info


def expected_frames(seconds: int) -> int:
    """Decoded frames of an s-second clip: T = (25 s) // 4 + 1 latent frames -> 4 (T - 1) + 1."""
    t = (FPS * seconds) // 4 + 1
    return 4 * (t - 1) + 1


def mp4_outputs(srv, result: dict) -> list[Path]:
    return [p for p in srv.output_files(result) if p.suffix == ".mp4"]


def mp4_files(output_dir: Path) -> set[Path]:
    return {Path(root) / f for root, _, files in os.walk(output_dir) for f in files if f.endswith(".mp4")}


def _mono(path: Path, rate: int) -> np.ndarray:
    """The first audio stream of a file as mono float32 at `rate` (PyAV's resampler)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    chunks = []
    with av.open(str(path)) as box:
        for frame in box.decode(audio=0):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float64)


def voice_match(mp4: Path, recording: Path, rate: int = 22050, max_lag: int = 4096) -> float:
    """Best normalised correlation between the mp4's sound and the start of `recording`, over shifts of up
    to max_lag samples either way (AAC priming / edit lists move the decoded start by ~1-2k samples).
    ~1.0 = the recording itself (AAC-coded); generated or silent audio stays far below."""
    got, ref = _mono(mp4, rate), _mono(recording, rate)
    n = min(len(got), len(ref)) - max_lag
    if n < rate // 4:
        raise AssertionError(f"too little audio to compare: {len(got)} samples in {mp4.name}, {len(ref)} in the recording")
    best = 0.0
    for a, b in ((got, ref), (ref, got)):  # a shifted later than b, then the other way
        y = b[:n]
        ny = np.linalg.norm(y)
        for lag in range(max_lag):
            x = a[lag:lag + n]
            denom = np.linalg.norm(x) * ny
            if denom > 0:
                best = max(best, float(np.dot(x, y) / denom))
    return best
