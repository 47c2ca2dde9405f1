"""Local pictures and videos -> what a create request may carry.

Images become base64 data URLs (``data:image/png;base64,...``): lossless PNG (stdlib zlib), or JPEG
(PyAV's mjpeg encoder) when the PNG is over the size limit. Data URLs are accepted by the gateways that
document HappyHorse, but no official page confirms them, so the nodes also offer Model Studio temporary
storage (upload.py, ``oss://``). A local video is never sent as base64 (reported unsupported); it goes
through temporary storage or the user gives a public URL.

Limits (HOSTED_API.md §2, strict reading; ``unconfirmed`` allows 20 MB images and 1:8..8:1 videos):
first frame and edit references >= 300 px each side, r2v references >= 400 px short side, aspect
1:2.5..2.5:1; edit video 3-60 s, long side <= 2160, short side >= 320, > 8 fps, <= 100 MB.
"""
from __future__ import annotations

import base64
import io
import struct
import zlib
from fractions import Fraction

import av
import numpy as np
import torch

from .spec import RequestError

IMAGE_MB, IMAGE_MB_UNCONFIRMED = 10, 20
MIN_SIDE = {"first_frame": 300, "reference_image": 400, "edit_reference": 300}   # px
ASPECT_MAX = 2.5
VIDEO_MB, VIDEO_S, VIDEO_LONG_MAX, VIDEO_SHORT_MIN, VIDEO_FPS_MIN = 100, (3.0, 60.0), 2160, 320, 8.0


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """IMAGE-like [H, W, 3] (or [1, H, W, 3]) float 0..1 or uint8 -> contiguous uint8 [H, W, 3]."""
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[-1] != 3:
        raise RequestError(f"an input picture must be [H, W, 3] RGB, got {tuple(image.shape)}: connect one image "
                           "(drop alpha with a convert node)")
    arr = image.detach().cpu()
    if arr.dtype != torch.uint8:
        arr = (arr.float().clamp(0, 1) * 255.0).round().to(torch.uint8)
    return np.ascontiguousarray(arr.numpy())


def check_image(h: int, w: int, role: str, what: str) -> None:
    """Geometry the service documents for a first frame / reference picture (role: a MIN_SIDE key)."""
    need = MIN_SIDE[role]
    if min(h, w) < need:
        side = "short side" if role == "reference_image" else "width and height"
        raise RequestError(f"{what} is {w}x{h}; the service needs a {side} of at least {need} px: upscale it "
                           "(e.g. Upscale Image) before this node")
    if max(h, w) > ASPECT_MAX * min(h, w):
        raise RequestError(f"{what} is {w}x{h}; the aspect ratio must be between 1:2.5 and 2.5:1: crop it first")


def png_bytes(rgb: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> a PNG file (8-bit RGB, no filter, zlib level 6)."""
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def jpeg_bytes(rgb: np.ndarray, qmax: int = 3) -> bytes:
    """uint8 [H, W, 3] -> a baseline JPEG via FFmpeg's mjpeg encoder (quality scale 2..qmax, lower = better)."""
    h, w, _ = rgb.shape
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = w, h, "yuvj420p", Fraction(1, 25)
    ctx.options = {"qmin": "2", "qmax": str(qmax)}
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
    packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    return bytes(packets[0])


def image_data_url(image: torch.Tensor, role: str, what: str, unconfirmed: bool = False) -> str:
    """One picture -> data:image/png (or image/jpeg when the PNG is too big);base64,... after the checks."""
    rgb = to_uint8(image)
    check_image(rgb.shape[0], rgb.shape[1], role, what)
    cap = (IMAGE_MB_UNCONFIRMED if unconfirmed else IMAGE_MB) * 2**20
    data, mime = png_bytes(rgb), "image/png"
    for q in (3, 8, 16):
        if len(data) * 4 / 3 <= cap:      # the limit is checked on the encoded string to be safe
            break
        data, mime = jpeg_bytes(rgb, q), "image/jpeg"
    if len(data) * 4 / 3 > cap:
        raise RequestError(f"{what} is still {len(data) / 2**20:.1f} MB as JPEG; the limit is {cap // 2**20} MB: "
                           "make it smaller")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_file_bytes(image: torch.Tensor, role: str, what: str) -> tuple[bytes, str]:
    """One picture -> (PNG bytes, file name) for temporary-storage upload, after the geometry checks."""
    rgb = to_uint8(image)
    check_image(rgb.shape[0], rgb.shape[1], role, what)
    return png_bytes(rgb), "image.png"


def check_video_bytes(data: bytes, unconfirmed: bool = False) -> dict:
    """Probe a source video (MP4/MOV bytes) for video edit; RequestError names the limit it breaks."""
    size = len(data)
    if size > VIDEO_MB * 2**20:
        raise RequestError(f"the source video is {size / 2**20:.0f} MB; the service takes at most {VIDEO_MB} MB")
    try:
        with av.open(io.BytesIO(data)) as box:
            if not box.streams.video:
                raise RequestError("the source video has no video stream")
            vs = box.streams.video[0]
            w, h = vs.codec_context.width, vs.codec_context.height
            fps = float(vs.average_rate or vs.guessed_rate or 0)
            seconds = float(box.duration / av.time_base) if box.duration else 0.0
    except av.error.FFmpegError as e:
        raise RequestError(f"cannot read the source video ({e}): give an MP4 or MOV") from None
    aspect = 8.0 if unconfirmed else ASPECT_MAX
    problems = []
    if not VIDEO_S[0] <= seconds <= VIDEO_S[1]:
        problems.append(f"it lasts {seconds:.1f} s (3..60 s allowed)")
    if max(w, h) > VIDEO_LONG_MAX or min(w, h) < VIDEO_SHORT_MIN:
        problems.append(f"it is {w}x{h} (long side <= {VIDEO_LONG_MAX}, short side >= {VIDEO_SHORT_MIN})")
    if max(w, h) > aspect * min(w, h):
        problems.append(f"its aspect {w}:{h} is outside 1:{aspect:g}..{aspect:g}:1")
    if fps <= VIDEO_FPS_MIN:
        problems.append(f"it runs at {fps:.1f} fps (more than 8 needed)")
    if problems:
        raise RequestError("the source video does not fit video edit: " + "; ".join(problems))
    return {"width": w, "height": h, "fps": fps, "seconds": seconds, "bytes": size}
