"""The downloaded MP4 -> frames, audio and frame rate (PyAV), so a hosted clip chains like a local one.

The service documents H.264 at 24 fps with (usually) an AAC track; the response carries no fps, so the
rate is read from the file. A file without an audio stream still gives its frames (audio = None); the
audio is decoded with happyhorse_core.media.read.read_audio.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional

import av
import torch

from ..media.read import read_audio
from .errors import HostedAPIError


@dataclass
class HostedClip:
    frames: torch.Tensor                 # [T, H, W, 3] float32 0..1 (T = 1 when only the first frame was kept)
    fps: Fraction
    waveform: Optional[torch.Tensor]     # [C, N] float32 -1..1, None when the file has no audio
    sample_rate: int
    frame_count: int                     # frames in the file

    @property
    def seconds(self) -> float:
        return self.frame_count / float(self.fps)


def decode_mp4(path: str | Path, first_only: bool = False, max_frames: int = 15 * 60 + 60) -> HostedClip:
    """Decode the video frames (all, or only the first: a 15 s 1080P clip is ~9 GB as float32) and the first
    audio stream of an MP4. At most max_frames frames are accepted."""
    path = Path(path)
    frames, count = [], 0
    try:
        with av.open(str(path)) as box:
            if not box.streams.video:
                raise HostedAPIError("malformed", f"the result {path.name} has no video stream")
            vs = box.streams.video[0]
            fps = Fraction(vs.average_rate or vs.guessed_rate or 0)
            has_audio = bool(box.streams.audio)
            for frame in box.decode(vs):
                count += 1
                if not (first_only and frames):
                    frames.append(frame.to_ndarray(format="rgb24"))   # [H, W, 3] uint8
                if count > max_frames:
                    raise HostedAPIError("too_large", f"the result has more than {max_frames} frames; the service "
                                         "documents at most 15 s")
    except av.error.FFmpegError as e:
        raise HostedAPIError("malformed", f"the downloaded result is not a decodable MP4 ({e})") from None
    if not frames:
        raise HostedAPIError("malformed", "the downloaded result holds no video frames")
    if fps <= 0:
        raise HostedAPIError("malformed", "the downloaded result has no frame rate")
    h, w, _ = frames[0].shape
    video = torch.empty(len(frames), h, w, 3)                          # [T, H, W, 3], filled frame by frame
    for i in range(len(frames)):
        video[i] = torch.from_numpy(frames[i]).float().div_(255.0)
        frames[i] = None                                               # free the uint8 copy as we go
    waveform, rate = None, 0
    if has_audio:
        try:
            waveform, rate = read_audio(path)                          # [C, N]
        except ValueError:        # an audio stream without samples counts as no audio
            waveform, rate = None, 0
    return HostedClip(video, fps, waveform, rate, count)
