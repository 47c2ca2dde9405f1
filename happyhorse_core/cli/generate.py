"""`python -m happyhorse_core.generate`: one clip from the command line, without ComfyUI.

For people without ComfyUI and for benchmarks. Flow: structured prompt -> T5Gemma -> DiT sampling
(distilled 8 steps or base 32 steps + CFG) -> optional latent super-resolution (540p / 1080p: base
stage at 256p, then the SR DiT, as the reference does) -> Turbo-VAED -> mp4 (H.264 25 fps + AAC).
Everything is validated before any weight is read; the output files appear atomically, so a
failure or Ctrl-C leaves nothing behind. Run with --help for the flags.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import textwrap
import time
import uuid
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors.torch import save

from .runner import ClipRequest, ClipResult, ClipRunner, encode_text, free_memory
from .components import (real_components, real_text_stack, resolve_device,
                         tiny_components, tiny_text_stack)
from ..geometry import ASPECTS, FPS, RESOLUTION_SHORT_SIDE, ClipGeometry, validate_steps
from ..media.mux import write_mp4
from ..media.read import read_audio, read_image
from ..dit.parallel import init_from_env, shard_components
from ..sampling.pipeline import DEFAULT_STEPS, MODES, SamplingOptions
from .progress import TextProgress, format_seconds
from ..text.prompts import DEFAULT_NEGATIVE_PROMPT, DialogueLine, build_prompt, format_dialogue_line

log = logging.getLogger("HappyHorse")
STANDIN_NOTE = ("--tiny uses TINY RANDOM weights and STAND-IN codecs (happyhorse_core.testing.tiny_codecs), not the "
                "Wan2.2 / Stable Audio VAEs: the clip is structured noise, for testing the plumbing only")
REAL_AUDIO_NOTE = ("with real weights the Stable Audio VAE (ComfyUI's) is not run here: the mp4 is video-only and "
                   "the clip's audio is saved as its latent [1, F, 64] next to it (<name>.audio_latent.safetensors); "
                   "decode it with the ComfyUI nodes")
REAL_INPUT_NOTE = ("--image and --audio need the Wan2.2 / Stable Audio VAEs, which happyhorse_core does not "
                   "re-implement: with real weights use the ComfyUI nodes for image-to-video and voice input")
DESCRIPTION = "Generate one HappyHorse-1.0 video+audio clip (H.264 + AAC mp4)."
LENGTH_NOTE = ("the decoders give 4(T-1)+1 frames, e.g. 49 (1.96 s) for 2 s; the sound is cut to the same length "
               "so both streams end together")
EXAMPLE = ("python -m happyhorse_core.generate --tiny --seconds 2 --prompt \"A woman smiles.\" "
           "--dialogue \"Woman in a red coat|English|Hello there\" --out demo.mp4")


def _epilog() -> str:
    notes = [STANDIN_NOTE, REAL_AUDIO_NOTE, REAL_INPUT_NOTE, LENGTH_NOTE]
    body = "\n".join(textwrap.fill(note + ".", width=100, initial_indent="  * ", subsequent_indent="    ",
                                   break_on_hyphens=False)
                     for note in notes)
    return f"notes:\n{body}\n\nexample:\n  {EXAMPLE}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m happyhorse_core.generate", description=DESCRIPTION, epilog=_epilog(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    t = p.add_argument_group("prompt")
    t.add_argument("--prompt", required=True, help="English scene description (who, look, delivery, camera, light)")
    t.add_argument("--dialogue", action="append", default=[], metavar="SPEAKER|LANGUAGE|LINE",
                   help="one utterance, repeatable, in speaking order; LANGUAGE: Mandarin, Cantonese, English, "
                        "Japanese, Korean, German or French")
    t.add_argument("--background-sound", default=None, help="most prominent background sound (default: none)")
    t.add_argument("--negative-prompt", default=DEFAULT_NEGATIVE_PROMPT,
                   help="negative prompt for CFG (base mode only); default: the built-in artefact list")
    i = p.add_argument_group("inputs (--tiny only, see the notes below)")
    i.add_argument("--image", type=Path, help="first-frame picture (PNG/JPEG): center-cropped and resized to the clip")
    i.add_argument("--audio", type=Path, help="voice track (any rate/channels): fitted to the clip length")
    s = p.add_argument_group("sampling and size")
    s.add_argument("--mode", choices=MODES, default="distilled",
                   help=f"distilled: {DEFAULT_STEPS['distilled']} steps, no CFG; "
                        f"base: {DEFAULT_STEPS['base']} steps + CFG")
    s.add_argument("--steps", type=int, default=None, help="sampler steps (default: 8 distilled, 32 base)")
    s.add_argument("--aspect", choices=list(ASPECTS), default="16:9")
    s.add_argument("--resolution", choices=list(RESOLUTION_SHORT_SIDE), default="256p",
                   help="256p: one stage; 540p / 1080p: a 256p base stage plus the latent SR stage (needs --sr-dit)")
    s.add_argument("--width", type=int, help="custom base width in px (with --height; floored to a multiple of 32)")
    s.add_argument("--height", type=int, help="custom base height in px (with --width)")
    s.add_argument("--seconds", type=int, default=4, help="clip length, whole seconds 1..15 (25 fps)")
    s.add_argument("--seed", type=int, default=42, help="noise seed (default 42, as the reference)")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, required=True, help="output .mp4 path (written atomically)")
    o.add_argument("--save-latents", action="store_true",
                   help="also save the final latents (model space) as <name>.latents.safetensors")
    w = p.add_argument_group("weights")
    w.add_argument("--tiny", action="store_true", help="random tiny weights + stand-in codecs, made on the fly "
                                                       "(no files needed; runs in seconds; output is noise)")
    w.add_argument("--dit", type=Path, help="DiT checkpoint (distill or base, matching --mode)")
    w.add_argument("--sr-dit", type=Path, help="super-resolution DiT (540p or 1080p, matching --resolution)")
    w.add_argument("--text-encoder", type=Path, help="google/t5gemma-9b-9b-ul2 folder (weights + tokenizer)")
    w.add_argument("--turbo-vaed", type=Path, help="Turbo-VAED decoder .safetensors")
    w.add_argument("--weight-dtype", default="bf16",
                   help="DiT storage: bf16, fp8_e4m3fn, fp8_e4m3fn_scaled or fp8_e5m2 (default bf16)")
    w.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    w.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: 1 with --tiny, whose ops are too small to share, "
                        "else torch's choice)")
    return p


def parse_dialogue(values: Sequence[str]) -> list[DialogueLine]:
    """'speaker|Language|line' strings -> DialogueLine (each checked now, before any model loads)."""
    from ..text.bounds import MAX_DIALOGUE_LINES, dialogue_cap_message
    from ..validation import check_one_line

    if len(values) > MAX_DIALOGUE_LINES:
        log.warning("HappyHorse: %s", dialogue_cap_message(len(values)))
        values = values[:MAX_DIALOGUE_LINES]
    lines = []
    for n, value in enumerate(values, start=1):
        check_one_line(value, f"--dialogue {n}")
        parts = value.split("|", 2)
        if len(parts) != 3:
            raise ValueError(f"--dialogue {value!r}: write it as 'speaker|Language|line', "
                             f"e.g. 'Woman in a red coat|English|Hello there'")
        line = DialogueLine(*(part.strip() for part in parts))
        format_dialogue_line(line, n)  # raises on an unknown language, empty text, ...
        lines.append(line)
    return lines


def clip_geometry(args: argparse.Namespace) -> tuple[ClipGeometry, Optional[ClipGeometry]]:
    """(base stage, SR stage or None); custom sizes are floored with a logged warning."""
    if (args.width is None) != (args.height is None):
        raise ValueError("pass both --width and --height for a custom size, or neither to use --aspect")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.width is not None:
            base = ClipGeometry.from_request(args.width, args.height, args.seconds)
        else:
            base = ClipGeometry.from_preset(args.aspect, "256p", args.seconds)
    for w in caught:
        log.warning("HappyHorse: %s", w.message)
    sr = base.sr_geometry(args.resolution) if args.resolution != "256p" else None
    return base, sr


def _check_file(path: Optional[Path], flag: str, what: str, folder_ok: bool = False) -> None:
    if path is None:
        raise ValueError(f"{flag} is required with real weights ({what}); or pass --tiny to test without weights")
    if not (path.is_file() or (folder_ok and path.is_dir())):
        from ..paths import broken_link_message
        broken = broken_link_message(path)
        if broken:
            raise FileNotFoundError(f"{flag}: {broken}")
        raise FileNotFoundError(f"{flag} {path}: no such {'file or folder' if folder_ok else 'file'} ({what})")


def check_weights(args: argparse.Namespace) -> None:
    """Real-weight paths exist and the inputs are ones this package can encode."""
    if args.tiny:
        return
    if args.image is not None or args.audio is not None:
        raise ValueError(REAL_INPUT_NOTE + " (or pass --tiny to test the plumbing with stand-in codecs)")
    _check_file(args.dit, "--dit", f"the {args.mode} DiT", folder_ok=True)
    _check_file(args.text_encoder, "--text-encoder", "the T5Gemma folder", folder_ok=True)
    _check_file(args.turbo_vaed, "--turbo-vaed", "the Turbo-VAED decoder")
    if args.resolution != "256p":
        _check_file(args.sr_dit, "--sr-dit", f"the {args.resolution} super-resolution DiT", folder_ok=True)


def build_request(args: argparse.Namespace) -> ClipRequest:
    """Validate every flag and read the optional inputs; nothing is loaded yet."""
    if args.out.suffix.lower() != ".mp4":
        raise ValueError(f"--out must end in .mp4, got {str(args.out)!r}")
    prompt = build_prompt(args.prompt, parse_dialogue(args.dialogue), args.background_sound)
    steps = None if args.steps is None else validate_steps(args.steps)
    sampling = SamplingOptions(mode=args.mode, steps=steps, seed=args.seed)
    base, sr = clip_geometry(args)
    check_weights(args)
    if args.mode == "base" and not (args.negative_prompt or "").strip():
        raise ValueError("base mode uses CFG against the negative prompt; --negative-prompt must not be empty")
    image = read_image(args.image) if args.image is not None else None
    voice = read_audio(args.audio) if args.audio is not None else None
    return ClipRequest(prompt=prompt, geometry=base, sr_geometry=sr, sampling=sampling,
                       negative_prompt=args.negative_prompt, image=image, voice=voice)


def output_paths(out: Path) -> dict[str, Path]:
    """mp4 and its companions: <name>.audio_latent.safetensors, <name>.latents.safetensors."""
    stem = out.with_suffix("")
    return {"mp4": out, "audio_latent": Path(f"{stem}.audio_latent.safetensors"),
            "latents": Path(f"{stem}.latents.safetensors")}


def _stage_safetensors(tensors: dict[str, torch.Tensor], dest: Path, metadata: dict[str, str]) -> Path:
    """Write to a hidden temporary file beside `dest`; the caller renames it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    try:
        with open(tmp, "wb") as f:  # plain open(): the file gets the user's umask, like the mp4
            f.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _companions(result: ClipResult, paths: dict[str, Path], save_latents: bool) -> list[tuple[Path, dict, dict]]:
    """(destination, tensors, metadata) of every safetensors file that goes with the mp4."""
    files = []
    if result.waveform is None:  # no audio decoder here: keep the sound as its latent
        meta = {"layout": "[1, F, 64] time-major", "space": "Stable Audio Open VAE latent",
                "frames_per_second": str(FPS), "decode": "ComfyUI HappyHorse nodes (Stable Audio VAE)"}
        files.append((paths["audio_latent"], {"audio_latent": result.audio_latent}, meta))
    if save_latents:
        meta = {"space": "model (Wan2.2 latent normalised by the 48-channel mean/std; audio as the VAE gives it)",
                "video": "[1, 48, T, h, w]", "audio": "[1, F, 64]"}
        files.append((paths["latents"], {"video": result.video_latent, "audio": result.audio_latent}, meta))
    return files


def write_outputs(result: ClipResult, out: Path, save_latents: bool) -> list[Path]:
    """All files or none: companions are staged, the mp4 is written atomically, then companions renamed."""
    files = _companions(result, output_paths(out), save_latents)
    staged: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for dest, tensors, meta in files:
            staged.append((_stage_safetensors(tensors, dest, meta), dest))
        write_mp4(out, result.frames, result.waveform)
        placed.append(out)
        while staged:
            tmp, dest = staged.pop()
            os.replace(tmp, dest)
            placed.append(dest)
    except BaseException:
        for path in [tmp for tmp, _ in staged] + placed:
            path.unlink(missing_ok=True)
        raise
    return [out] + [dest for dest, _, _ in files]


# -- running ---------------------------------------------------------------------------------------
def _setup_logging() -> None:
    if not any(getattr(h, "_happyhorse_cli", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._happyhorse_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _describe(args: argparse.Namespace, request: ClipRequest, device: torch.device) -> str:
    g, sr = request.geometry, request.sr_geometry
    size = f"{g.width}x{g.height}" + (f" -> SR {sr.width}x{sr.height}" if sr else "")
    extras = "".join([", image-to-video" if args.image else "", ", voice track" if args.audio else ""])
    steps = request.sampling.steps
    return (f"HappyHorse: {request.sampling.mode}, {steps} step{'' if steps == 1 else 's'}, {size}, {g.seconds} s "
            f"({g.decoded_frames} frames at {FPS} fps), seed {request.sampling.seed}{extras}, device {device}")


def _log_notes(args: argparse.Namespace, request: ClipRequest) -> None:
    if args.tiny:
        log.warning("HappyHorse: %s", STANDIN_NOTE)
    else:
        name = output_paths(args.out)["audio_latent"].name
        log.info("HappyHorse: %s", REAL_AUDIO_NOTE.replace("<name>.audio_latent.safetensors", name))
    if request.sampling.mode == "distilled" and args.negative_prompt != DEFAULT_NEGATIVE_PROMPT:
        log.warning("HappyHorse: --negative-prompt is only used by base mode (CFG); distilled mode ignores it")


def _encode_prompts(args: argparse.Namespace, request: ClipRequest, device: torch.device,
                    timings: dict[str, float]):
    """Load the text stack, encode, and drop it before the DiT is loaded (they never share memory)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="happyhorse-tiny-text-") as tmp:
        encoder, tokenizer = tiny_text_stack(tmp, device) if args.tiny else real_text_stack(args.text_encoder, device)
    timings["load text encoder"] = time.perf_counter() - start
    start = time.perf_counter()
    text = encode_text(encoder, tokenizer, request)
    timings["encode text"] = time.perf_counter() - start
    del encoder, tokenizer
    free_memory()
    return text


def _components(args: argparse.Namespace, request: ClipRequest, device: torch.device):
    sr = args.resolution if request.sr_geometry is not None else None
    if args.tiny:
        return tiny_components(args.mode, sr, device)
    return real_components(dit=args.dit, turbo_vaed=args.turbo_vaed, mode=args.mode, sr_dit=args.sr_dit,
                           sr_resolution=sr, weight_dtype=args.weight_dtype, device=device)


def _summary(written: list[Path], result: ClipResult, timings: dict[str, float], total: float) -> str:
    h, w = result.frames.shape[1:3]
    sound = "AAC 44.1 kHz" if result.waveform is not None else f"no audio track, audio latent in {written[1].name}"
    stages = ", ".join(f"{name} {format_seconds(sec)}" for name, sec in timings.items())
    return (f"HappyHorse: wrote {written[0]} ({result.duration_s:.2f} s, {w}x{h}, {result.frames.shape[0]} frames "
            f"at {FPS} fps, {sound}) in {format_seconds(total)}: {stages}")


def run(args: argparse.Namespace) -> list[Path]:
    """Validate, load, sample, decode, write. Returns the written paths."""
    started = time.perf_counter()
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    request = build_request(args)
    threads = args.threads if args.threads is not None else (1 if args.tiny else None)
    if threads is not None:
        torch.set_num_threads(threads)
    device = resolve_device(args.device)
    ranks = init_from_env(device)  # torchrun: sequence-parallel sampling, one process per GPU (parallel.py)
    if ranks is not None:
        device = ranks.device
        if not ranks.is_main:
            log.setLevel(logging.WARNING)
    _log_notes(args, request)
    log.info(_describe(args, request, device) + (f", {ranks.world} ranks ({ranks.backend})" if ranks else ""))
    timings: dict[str, float] = {}
    text = _encode_prompts(args, request, device, timings)
    start = time.perf_counter()
    components = _components(args, request, device)
    if ranks is not None:
        components = shard_components(components)
    show = ranks is None or ranks.is_main
    runner = ClipRunner(components, progress=(lambda label, unit: TextProgress(label, unit)) if show else None)
    timings["load DiT"] = time.perf_counter() - start
    result = runner.run(request, text)
    timings.update(result.timings)
    if not show:  # only rank 0 writes; every rank holds the same latents
        return []
    start = time.perf_counter()
    written = write_outputs(result, args.out, args.save_latents)
    timings["write mp4"] = time.perf_counter() - start
    print(_summary(written, result, timings, time.perf_counter() - started), flush=True)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        run(args)
    except KeyboardInterrupt:
        print("HappyHorse: interrupted; no output was written", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"HappyHorse: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
