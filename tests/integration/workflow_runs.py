"""Running the shipped workflows on the tiny weights: model/input files for the server, the realistic
file names swapped for the tiny ones, CPU-size widget shrinks, and the mp4 checks.

Used by test_workflows_run.py; only widget values are changed, never the graph, so what runs is what ships.
"""
from __future__ import annotations

import math
import os
import struct
import sys
import wave
import zlib
from pathlib import Path

import av

from comfy_harness import CACHE, REPO, place_file

if str(REPO / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO / "scripts"))  # workflow_specs / build_workflows live there
from happyhorse_core.testing.tiny_models import (DIT_FILES, SAO_VAE_FILE, TEXT_ENCODER_FILE, TURBO_VAED_FILE,  # noqa: E402
                                         WAN22_VAE_FILE, write_tiny_models)
from happyhorse_core.testing.tiny_lora import TINY_LORA_FILE, write_tiny_lora  # noqa: E402
from happyhorse_core.testing.tiny_native_vaes import cached_vae_files  # noqa: E402
from workflow_specs import FILES, START_IMAGE, VOICE_TRACK  # noqa: E402

FPS = 25
FRAME_S = 1 / FPS
LOADER_FILE_WIDGETS = {"HappyHorseModelLoader": "model_name", "HappyHorseTextEncoderLoader": "encoder_name",
                       "HappyHorseTurboVAEDLoader": "vae_name", "VAELoader": "vae_name",
                       "LoraLoaderModelOnly": "lora_name", "HappyHorseLoraLoader": "lora_name"}

# realistic name in the shipped workflows -> tiny file placed in the server's models tree
TINY_NAMES = {
    FILES["distill"].name: DIT_FILES["distill"],
    FILES["base"].name: DIT_FILES["base"],
    FILES["sr_1080p"].name: DIT_FILES["sr_1080p"],
    FILES["text_encoder"].name: TEXT_ENCODER_FILE,
    FILES["turbo_vaed"].name: TURBO_VAED_FILE,
    FILES["sao_vae"].name: SAO_VAE_FILE,
    FILES["wan22_vae"].name: WAN22_VAE_FILE,
    FILES["lora"].name: TINY_LORA_FILE,
}


def install_tiny_models(models_dir: Path) -> None:
    """Tiny DiTs / T5Gemma / Turbo-VAED (written once per base dir) and the native VAEs (hard links)."""
    stamp = models_dir / ".happyhorse-tiny"
    if not stamp.is_file():
        write_tiny_models(models_dir, native_vaes=False)
        stamp.write_text("tiny random weights for the workflow tests\n")
    if not (models_dir / "loras" / TINY_LORA_FILE).is_file():
        write_tiny_lora(models_dir / "loras" / TINY_LORA_FILE)
    native = cached_vae_files(CACHE / "tiny_native")
    place_file(native["wan22"], models_dir / "vae" / WAN22_VAE_FILE)
    place_file(native["stable_audio"], models_dir / "vae" / SAO_VAE_FILE)


def write_png(path: Path, width: int = 320, height: int = 240) -> Path:
    """An RGB gradient PNG (stdlib only: zlib + struct)."""
    rows = b"".join(b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 96))
                    for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path


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
    input_dir.mkdir(parents=True, exist_ok=True)
    if not (input_dir / START_IMAGE).exists():
        write_png(input_dir / START_IMAGE)
    if not (input_dir / VOICE_TRACK).exists():
        write_wav(input_dir / VOICE_TRACK)


def to_tiny(api: dict) -> dict:
    """Swap every loader's realistic file name for its tiny file; an unknown name is an error (the
    workflows must only use the names their Note documents)."""
    out = {}
    for nid, node in api.items():
        node = {**node, "inputs": dict(node["inputs"])}
        widget = LOADER_FILE_WIDGETS.get(node["class_type"])
        if widget:
            name = node["inputs"][widget]
            if name not in TINY_NAMES:
                raise AssertionError(f"node {nid} ({node['class_type']}) loads {name!r}, which is not one of the "
                                     f"documented files {sorted(TINY_NAMES)}")
            node["inputs"][widget] = TINY_NAMES[name]
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
