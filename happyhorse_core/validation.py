"""Checks and small conversions at the host boundary, with messages that say what to do.

Hosts (the ComfyUI nodes, the CLI) call these before any model work so that a wrong graph or
widget value fails fast with our message instead of a shape error deep inside the DiT.
"""
from __future__ import annotations

import re
import warnings
from typing import Callable, Optional

import torch

from .geometry import AUDIO_LATENT_CHANNELS, VAE_STRIDE_T, VIDEO_LATENT_CHANNELS, ClipGeometry
from .text.prompts import DialogueLine


class ImageBatchWarning(UserWarning):
    """A batch of images was given where one start frame is used; the first one is taken."""


def check_video_latent(video: torch.Tensor) -> None:
    """A host video latent: a floating [B, 48, T, h, w] tensor (raw Wan2.2 or model space), finite."""
    if not isinstance(video, torch.Tensor):
        raise ValueError(f"the video latent must be a tensor, got {type(video).__name__}; connect a LATENT output")
    if video.ndim != 5 or video.shape[1] != VIDEO_LATENT_CHANNELS:
        raise ValueError(f"video latent must be [B, 48, T, h, w] (Wan2.2 space), got {list(video.shape)}; use the "
                         "video output of HappyHorse Empty Latent or a Wan2.2 (48-channel) VAE, not Wan2.1 / SD")
    _check_values(video, "video")


def check_audio_latent(audio: torch.Tensor) -> None:
    """A host audio latent: a floating [B, 64, F] tensor (Stable Audio Open space, channels first), finite."""
    if not isinstance(audio, torch.Tensor):
        raise ValueError(f"the audio latent must be a tensor, got {type(audio).__name__}; connect a LATENT output")
    if audio.ndim != 3 or audio.shape[1] != AUDIO_LATENT_CHANNELS:
        raise ValueError(f"audio latent must be [B, 64, F] (Stable Audio space), got {list(audio.shape)}; use the "
                         "audio output of HappyHorse Empty Latent")
    _check_values(audio, "audio")


def _check_values(x: torch.Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise ValueError(f"the {name} latent must be floating point, got {x.dtype}; connect a LATENT output")
    if not torch.isfinite(x).all():
        raise ValueError(f"the {name} latent contains NaN/Inf values; check the node that produced it")


def check_clip_latents(video: torch.Tensor, audio: torch.Tensor) -> None:
    """Video [B, 48, T, h, w] and audio [B, 64, F] must describe one clip: T = (F - 1) // 4 + 1.

    The one latent check at the host boundary (nodes, CLI); sampling.latents converts with the same checks."""
    check_video_latent(video)
    check_audio_latent(audio)
    b, _, t, h, w = video.shape
    if min(b, t, h, w, audio.shape[0], audio.shape[2]) < 1 or h % 2 or w % 2:
        raise ValueError(f"the video latent {list(video.shape)} / audio latent {list(audio.shape)} is empty or has "
                         "an odd height/width; HappyHorse latents are at least [1, 48, 1, 2, 2] with even sizes "
                         "(pixel sizes multiples of 32): make them with HappyHorse Empty Latent")
    t, f = video.shape[2], audio.shape[2]
    if (f - 1) // VAE_STRIDE_T + 1 != t or video.shape[0] != audio.shape[0]:
        raise ValueError(f"the audio latent ({f} frames, batch {audio.shape[0]}) does not match the video latent "
                         f"({t} latent frames, batch {video.shape[0]}); a clip of s seconds has 25*s+1 audio "
                         "frames. Connect both outputs of the same HappyHorse Empty Latent")


def start_image(image: torch.Tensor) -> torch.Tensor:
    """The start frame of an IMAGE batch [B, H, W, C] as RGB [1, H, W, 3].

    Image-to-video uses one picture: with B > 1 the first is used and an ImageBatchWarning says so.
    """
    if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[0] > 1:
        warnings.warn(f"image batch of {image.shape[0]}; using the first image as the start frame "
                      "(pick one with an image-batch node to choose another)", ImageBatchWarning, stacklevel=2)
    rgb = to_rgb(image)
    if rgb.shape[0] < 1 or min(rgb.shape[1:3]) < 1:
        raise ValueError(f"the image is empty (shape {list(image.shape)}); connect a loaded picture")
    return rgb[:1]


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Channels-last image [B, H, W, C], C = 1 (grayscale), 3 or 4 (RGBA) -> [B, H, W, 3]."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be [batch, height, width, channels], got {shape}; connect an IMAGE output")
    c = image.shape[-1]
    if c == 3:
        return image
    if c == 4:
        return image[..., :3]
    if c == 1:
        return image.expand(*image.shape[:-1], 3)
    raise ValueError(f"image has {c} channels; give an RGB, RGBA or grayscale image (convert it first)")


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what the multiline widget writes; NOT str.splitlines()
_SEPARATORS = {"\u2028": "U+2028 LINE SEPARATOR", "\u2029": "U+2029 PARAGRAPH SEPARATOR"}


def check_one_line(text: str, where: str) -> None:
    """ValueError when `text` (one utterance) holds a Unicode line or paragraph separator."""
    for ch, name in _SEPARATORS.items():
        if ch in text:
            raise ValueError(f"{where} contains a {name} (pasted from a web page or document) inside the "
                             "utterance; replace it with a space, or press Enter to start a new dialogue line")


def parse_dialogue(speaker: str, language: str, line: str, more: str,
                   warn: Optional[Callable[[str], None]] = None) -> list[DialogueLine]:
    """The first utterance from separate fields, then one `speaker | Language | line` per extra line.

    Lines are split at newlines only (str.splitlines() would also split at U+2028/U+2029 and other
    separators, cutting an utterance in two); those separators inside a line are refused with a
    message. At most MAX_DIALOGUE_LINES utterances are kept (the model reads 640 tokens of prompt);
    `warn(message)` is told when more were given.
    """
    from .text.bounds import MAX_DIALOGUE_LINES, dialogue_cap_message

    out = []
    if line.strip():
        check_one_line(line, "the dialogue line")
        out.append(DialogueLine(speaker.strip() or "Speaker", language, line.strip()))
    total = len(out)
    for n, raw in enumerate(_LINE_BREAK.split(more), start=1):
        if not raw.strip():
            continue
        total += 1
        if total > MAX_DIALOGUE_LINES:
            continue  # counted for the warning, never parsed or encoded
        check_one_line(raw, f"more_dialogue line {n}")
        parts = [p.strip() for p in raw.split("|")]
        if len(parts) != 3:
            raise ValueError(f"more_dialogue line {n} must read 'speaker | Language | line', got "
                             f"{raw[:80]!r}{' ...' if len(raw) > 80 else ''}")
        out.append(DialogueLine(*parts))
    if total > MAX_DIALOGUE_LINES and warn is not None:
        warn(dialogue_cap_message(total))
    return out


def sr_latent_hw(base_h: int, base_w: int, target: str) -> tuple[int, int]:
    """SR latent size for a base latent (h, w): the same aspect's size at `target` (540p / 1080p)."""
    if base_h < 2 or base_w < 2 or base_h % 2 or base_w % 2:
        raise ValueError(f"the base video latent is {base_h}x{base_w}; HappyHorse latents have even sizes of at "
                         "least 2 (pixels multiples of 32): connect the HappyHorse Sampler's video latent")
    try:
        sr = ClipGeometry(base_w * 16, base_h * 16, 1).sr_geometry(target)  # seconds do not matter for sizes
    except ValueError as exc:
        raise ValueError(f"the {target} super-resolution size is derived from the base video latent "
                         f"{base_h}x{base_w} ({base_w * 16}x{base_h * 16} px, keeping its aspect) and is not "
                         f"usable: {exc}. Feed Super-Resolution the 256p video latent of the HappyHorse Sampler "
                         "(an aspect between 1:4 and 4:1)") from None
    return sr.latent_h, sr.latent_w


def check_guidance_widgets(mode: str, **scales: float) -> None:
    """Base-mode CFG scales, by widget name, must be finite numbers >= 0 (an API workflow can send NaN,
    which passes ComfyUI's min/max check). Distilled sampling runs no CFG and never reads them."""
    if mode != "base":
        return
    for widget, value in scales.items():
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or value != value or value in (float("inf"), float("-inf")) or value < 0:
            raise ValueError(f"the sampler's {widget} is {value!r}; base mode needs a finite guidance scale "
                             f"(1.0-20.0, default 5.0 for video_cfg/audio_cfg, 2.0 for video_cfg_late): set the "
                             "widget to a number")
