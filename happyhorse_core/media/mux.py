"""Write a clip (frames + waveform) to an mp4 with PyAV, and read its properties back.

Used by the CLI / demo path and the tests; inside ComfyUI the native CreateVideo / SaveVideo
nodes do the muxing. The file matches what the reference produces (MODEL_SPEC §7.4): H.264
(libx264, yuv420p) at 25 fps and AAC stereo at 44 100 Hz, with no ``-shortest`` trimming.

The write is atomic: everything goes to a hidden temporary file in the destination folder,
which replaces the destination only after the container was closed successfully; on any
error (KeyboardInterrupt included) the temporary file is deleted and nothing is left behind.
"""
from __future__ import annotations

import os
import uuid
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from .audio import resample
from ..geometry import AUDIO_OUTPUT_RATE, FPS

AAC_FRAME = 1024  # samples per AAC frame
Frames = torch.Tensor | np.ndarray  # [T, H, W, 3] uint8 or float 0..1


def _check_frames(frames: Frames, pad_to_even: bool) -> tuple[Frames, tuple[int, int]]:
    """Validate frames [T, H, W, 3]; return them (on the CPU, not yet converted) and the encoded (W, H)."""
    arr = frames.detach().cpu() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise ValueError(f"frames must be [T, H, W, 3] with T >= 1, got shape {tuple(arr.shape)}")
    if isinstance(arr, torch.Tensor):
        ok = arr.dtype == torch.uint8 or arr.is_floating_point()
    else:
        ok = arr.dtype == np.uint8 or np.issubdtype(arr.dtype, np.floating)
    if not ok:
        raise ValueError(f"frames must be uint8 or float 0..1, got dtype {arr.dtype}")
    _, h, w, _ = arr.shape
    if (h % 2 or w % 2) and not pad_to_even:
        raise ValueError(
            f"H.264 yuv420p needs even width and height, got {w}x{h}; crop the frames or pass "
            f"pad_to_even=True to repeat the last row/column"
        )
    return arr, (w + w % 2, h + h % 2)


def _frame_uint8(frame: Frames, index: int) -> np.ndarray:
    """One frame [H, W, 3] uint8 or float 0..1 -> contiguous uint8 [H', W', 3] with even H', W'."""
    if isinstance(frame, torch.Tensor):  # per frame, so a bf16 clip is never copied whole
        frame = frame.numpy() if frame.dtype == torch.uint8 else frame.float().numpy()
    if frame.dtype != np.uint8:
        if not np.isfinite(frame).all():
            raise ValueError(f"frame {index} contains NaN or infinite values")
        frame = np.rint(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)
    h, w, _ = frame.shape
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(frame)


def _audio_to_stereo(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> np.ndarray:
    """[C, N] (or [N], [1, C, N]) float, C in 1..2 -> float32 [2, N'] at 44 100 Hz, clipped to ±1."""
    wav = torch.as_tensor(np.asarray(waveform) if not isinstance(waveform, torch.Tensor) else waveform)
    wav = wav.detach().cpu()
    if wav.dim() == 3 and wav.shape[0] == 1:
        wav = wav[0]
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2 or wav.shape[0] not in (1, 2) or wav.shape[1] < 1:
        raise ValueError(f"waveform must be [C, N] with C = 1 or 2 channels, got shape {tuple(wav.shape)}")
    if not wav.is_floating_point():
        raise ValueError(f"waveform must be float in -1..1, got dtype {wav.dtype}")
    if not torch.isfinite(wav).all():
        raise ValueError("waveform contains NaN or infinite samples")
    if int(sample_rate) <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    wav = wav.float().expand(2, -1)
    if int(sample_rate) != AUDIO_OUTPUT_RATE:
        wav = resample(wav, int(sample_rate), AUDIO_OUTPUT_RATE)
    return np.ascontiguousarray(wav.clamp(-1.0, 1.0).numpy())


def _add_video_stream(container: av.container.OutputContainer, size: tuple[int, int], fps: Fraction, crf: int):
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = size  # (W, H)
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf), "preset": "medium"}
    return stream


def _add_audio_stream(container: av.container.OutputContainer, bitrate: int):
    stream = container.add_stream("aac", rate=AUDIO_OUTPUT_RATE, layout="stereo")
    stream.bit_rate = bitrate
    return stream


def _encode_video(container: av.container.OutputContainer, stream, frames: Frames) -> None:
    for i in range(frames.shape[0]):  # converted one at a time: a 1080p clip is GBs as float
        frame = av.VideoFrame.from_ndarray(_frame_uint8(frames[i], i), format="rgb24")
        frame.pts = i
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _encode_audio(container: av.container.OutputContainer, stream, wav: np.ndarray) -> None:
    for start in range(0, wav.shape[1], AAC_FRAME):
        chunk = np.ascontiguousarray(wav[:, start : start + AAC_FRAME])  # [2, <=1024] planar
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_OUTPUT_RATE, start, Fraction(1, AUDIO_OUTPUT_RATE)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_mp4(
    path: str | os.PathLike,
    frames: torch.Tensor | np.ndarray,
    waveform: torch.Tensor | np.ndarray | None = None,
    sample_rate: int = AUDIO_OUTPUT_RATE,
    fps: int | Fraction = FPS,
    crf: int = 18,
    audio_bitrate: int = 192_000,
    pad_to_even: bool = False,
) -> Path:
    """Write frames [T, H, W, 3] (uint8, or float 0..1) and an optional waveform [C, N] to mp4.

    Video: H.264 yuv420p at ``fps``; odd sizes raise ValueError unless ``pad_to_even``.
    Audio: AAC stereo at 44 100 Hz (mono is duplicated, other rates are resampled).
    The destination folder is created if needed; the file appears atomically. Returns the path.
    """
    video, size = _check_frames(frames, pad_to_even)
    wav = None if waveform is None else _audio_to_stereo(waveform, sample_rate)
    fps = Fraction(fps)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    dest = Path(path)
    if dest.suffix.lower() != ".mp4":
        raise ValueError(f"output file must end in .mp4, got {dest.name!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{uuid.uuid4().hex[:8]}.part")
    container = None
    try:
        container = av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        vstream = _add_video_stream(container, size, fps, crf)
        astream = None if wav is None else _add_audio_stream(container, audio_bitrate)
        _encode_video(container, vstream, video)
        if astream is not None:
            _encode_audio(container, astream, wav)
        container.close()
        container = None
        os.replace(tmp, dest)
    except BaseException:
        if container is not None:
            try:
                container.close()
            except Exception:  # the original error matters more than a failed close
                pass
        tmp.unlink(missing_ok=True)
        raise
    return dest


def probe_mp4(path: str | os.PathLike) -> dict:
    """Read back codec names, fps, frame count, size, audio rate and durations of an mp4."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    info: dict = {"video_codec": None, "fps": None, "frames": 0, "width": None, "height": None,
                  "video_duration_s": None, "audio_codec": None, "sample_rate": None,
                  "audio_channels": None, "audio_duration_s": None}
    with av.open(str(path)) as container:
        if container.streams.video:
            vs = container.streams.video[0]
            info.update(video_codec=vs.codec_context.name, width=vs.codec_context.width,
                        height=vs.codec_context.height, fps=float(vs.average_rate or vs.guessed_rate))
            info["frames"] = sum(1 for pkt in container.demux(vs) if pkt.size > 0)
            info["video_duration_s"] = info["frames"] / info["fps"]
    with av.open(str(path)) as container:
        if container.streams.audio:
            ast = container.streams.audio[0]
            rate = ast.codec_context.sample_rate
            if ast.duration is not None:  # from the mp4 edit list: encoder priming excluded
                duration = float(ast.duration * ast.time_base)
            else:
                duration = sum(frame.samples for frame in container.decode(ast)) / rate
            info.update(audio_codec=ast.codec_context.name, sample_rate=rate,
                        audio_channels=ast.codec_context.channels,
                        audio_duration_s=duration)
    return info
