"""One clip from already-loaded components: text features -> latents -> (SR) -> frames + waveform.

Shared by the CLI (`python -m happyhorse_core.generate`) and the benchmarks. The codecs are plain
callables (ARCHITECTURE.md: the Wan2.2 and Stable Audio VAEs are the host's), so the same runner
drives the real Turbo-VAED decoder, ComfyUI-provided codecs, or the `tiny_codecs` stand-ins.
Latents are in model space throughout (pipeline.py). Stage timings are recorded in `ClipResult`.

Audio length: the decoders give 4(T-1)+1 video frames, which is fewer than 25·s+1 when 25·s is not
a multiple of 4 (2 s: 49 frames = 1.96 s, audio 2.04 s). With `match_audio_to_video` (default) the
44.1 kHz waveform is cut to the video's duration so both streams of the mp4 end together; the
reference keeps the extra ≤0.12 s of sound.
"""
from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from ..media.audio import output_audio, prepare_voice_track
from ..geometry import AUDIO_NOMINAL_RATE, FPS, ClipGeometry
from ..media.read import fit_image
from ..sampling.noise import make_generator
from ..sampling.pipeline import Hooks, ProgressFn, SamplingOptions, TextConditioning, generate
from ..sampling.super_resolution import SROptions, super_resolve
from ..text.bounds import truncation_message
from ..text.encoder import MAX_TEXT_TOKENS, encode_prompt
from ..text.prompts import DEFAULT_NEGATIVE_PROMPT

log = logging.getLogger("HappyHorse")

# [1, 48, T, h, w] model space -> [1, 3, 4(T-1)+1, 16h, 16w] in 0..1; the progress hook is optional
VideoDecodeFn = Callable[[torch.Tensor, Optional[ProgressFn]], torch.Tensor]
AudioDecodeFn = Callable[[torch.Tensor], torch.Tensor]  # [1, F, 64] -> [2, 2048·F] at the nominal 51 200 Hz
ImageEncodeFn = Callable[[torch.Tensor], torch.Tensor]  # [1, 3, 1, H, W] 0..1 -> [1, 48, 1, H/16, W/16] model space
AudioEncodeFn = Callable[[torch.Tensor], torch.Tensor]  # [2, N] at 51 200 Hz -> [1, ceil(N/2048), 64]
ProgressFactory = Callable[[str, str], ProgressFn]  # (label, unit) -> progress(done, total)
ModelOrLoader = Union[nn.Module, Callable[[], nn.Module]]


@dataclass
class ClipComponents:
    """Loaded models and codec callables. `sr_dit` may be a zero-argument loader (called on first use)."""

    dit: Optional[nn.Module]
    decode_video: VideoDecodeFn
    sr_dit: Optional[ModelOrLoader] = None
    decode_audio: Optional[AudioDecodeFn] = None  # None: the clip's audio stays a latent
    encode_image: Optional[ImageEncodeFn] = None  # None: image-to-video is not available
    encode_audio: Optional[AudioEncodeFn] = None  # None: a voice track is not available
    device: Optional[Union[str, torch.device]] = None  # None: each model's own device
    release_between_stages: bool = False  # drop the base DiT before the SR stage (one GPU, two 15B models)


@dataclass
class ClipRequest:
    """What to make. `prompt` is the full structured prompt (text.prompts.build_prompt)."""

    prompt: str
    geometry: ClipGeometry  # base stage size and duration
    sr_geometry: Optional[ClipGeometry] = None  # latent SR target (540p / 1080p), same duration
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    sr: SROptions = field(default_factory=SROptions)
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    image: Optional[torch.Tensor] = None  # reference picture [3, H, W] uint8 (or float 0..1)
    voice: Optional[tuple[torch.Tensor, int]] = None  # (waveform [C, N] float, sample rate)
    match_audio_to_video: bool = True

    @property
    def needs_negative(self) -> bool:
        return self.sampling.mode == "base" or (self.sr_geometry is not None and self.sr.cfg)


@dataclass
class ClipResult:
    frames: torch.Tensor  # [F, H, W, 3] uint8, F = 4(T-1)+1
    waveform: Optional[torch.Tensor]  # [2, N] float at 44 100 Hz; None without an audio decoder
    video_latent: torch.Tensor  # [1, 48, T, h, w] model space (after SR when it ran)
    audio_latent: torch.Tensor  # [1, F, 64]
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds, in run order

    @property
    def duration_s(self) -> float:
        return self.frames.shape[0] / FPS


def encode_text(encoder: Any, tokenizer: Any, request: ClipRequest) -> TextConditioning:
    """Prompt (and, when CFG needs it, the negative prompt) -> TextConditioning; warns when cut to 640 tokens."""
    def one(text: str, what: str) -> torch.Tensor:
        feats = encode_prompt(encoder, tokenizer, text, MAX_TEXT_TOKENS, what=what)  # cut before the encoder
        if feats.truncated:
            log.warning("HappyHorse: %s", truncation_message(what, feats.tokens))
        return feats.features.cpu()  # [n, Dt] fp32

    positive = one(request.prompt, "prompt")
    negative = one(request.negative_prompt, "negative prompt") if request.needs_negative else None
    return TextConditioning(positive, negative)


def voice_latent(voice: tuple[torch.Tensor, int], geometry: ClipGeometry, encode_audio: AudioEncodeFn
                 ) -> torch.Tensor:
    """User track -> mono on both channels at 51 200 Hz, fitted to the clip -> audio latent [1, F, 64]."""
    waveform, rate = voice
    prepared = prepare_voice_track(waveform, rate, AUDIO_NOMINAL_RATE, geometry.audio_samples_nominal)
    clip_s = geometry.audio_samples_nominal / AUDIO_NOMINAL_RATE
    if prepared.source_duration_s - clip_s >= 1 / FPS:
        log.warning("HappyHorse: the voice track lasts %.2f s; cut to the clip's %.2f s",
                    prepared.source_duration_s, clip_s)
    if prepared.padded:
        log.warning("HappyHorse: the voice track lasts %.2f s; padded with silence to the clip's %.2f s",
                    prepared.source_duration_s, clip_s)
    if prepared.silent:
        log.warning("HappyHorse: the voice track is silent (peak below -60 dBFS); the clip will have no speech")
    latent = encode_audio(prepared.waveform)
    if tuple(latent.shape) != geometry.audio_latent_shape:
        raise ValueError(f"the audio encoder returned {list(latent.shape)}, "
                         f"expected {list(geometry.audio_latent_shape)}")
    return latent.float().cpu()


def image_latent(image: torch.Tensor, geometry: ClipGeometry, encode_image: ImageEncodeFn) -> torch.Tensor:
    """Reference picture -> center-crop + resize to the stage size -> clean first-frame latent [1, 48, 1, h, w]."""
    latent = encode_image(fit_image(image, geometry.width, geometry.height))
    expected = (1, 48, 1, geometry.latent_h, geometry.latent_w)
    if tuple(latent.shape) != expected:
        raise ValueError(f"the image encoder returned {list(latent.shape)}, expected {list(expected)}")
    return latent.float().cpu()


def to_uint8_frames(video: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """[1, 3, F, H, W] float 0..1 -> [F, H, W, 3] uint8, a few frames at a time (1080p clips are GBs)."""
    if video.ndim != 5 or video.shape[:2] != (1, 3):
        raise ValueError(f"decoded video must be [1, 3, F, H, W], got {list(video.shape)}")
    _, _, f, h, w = video.shape
    out = torch.empty(f, h, w, 3, dtype=torch.uint8)
    for s in range(0, f, chunk):
        part = video[0, :, s:s + chunk].float().cpu().permute(1, 2, 3, 0)  # [n, H, W, 3]
        out[s:s + chunk] = part.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return out


def free_memory() -> None:
    """Collect dropped models now and give cached CUDA blocks back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class ClipRunner:
    """Runs requests on one set of components: inputs -> base stage -> optional SR -> decode.

    `progress(label, unit)` makes a progress callable per stage (e.g. progress.TextProgress);
    `interrupt` is called before every step and raises to stop.
    """

    def __init__(self, components: ClipComponents, progress: Optional[ProgressFactory] = None,
                 interrupt: Optional[Callable[[], None]] = None) -> None:
        self.components = components
        self.progress = progress
        self.interrupt = interrupt

    def _hooks(self, label: str, unit: str = "step") -> Hooks:
        return Hooks(progress=self.progress(label, unit) if self.progress else None, interrupt=self.interrupt)

    def _timed(self, timings: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
        return out

    def _conditioning(self, request: ClipRequest, geometry: ClipGeometry):
        c = self.components
        img = voice = None
        if request.image is not None:
            if c.encode_image is None:
                raise ValueError("these components have no image encoder; image-to-video needs the Wan2.2 VAE")
            img = image_latent(request.image, geometry, c.encode_image)
        if request.voice is not None:
            if c.encode_audio is None:
                raise ValueError("these components have no audio encoder; a voice track needs the Stable Audio VAE")
            voice = voice_latent(request.voice, geometry, c.encode_audio)
        return img, voice

    def _base_stage(self, request: ClipRequest, text: TextConditioning, gen: torch.Generator,
                    img: Optional[torch.Tensor], voice: Optional[torch.Tensor]):
        c, g = self.components, request.geometry
        if c.dit is None:
            raise ValueError("the base DiT was released; build new components for another clip")
        return generate(c.dit, text, latent_frames=g.latent_frames, latent_h=g.latent_h, latent_w=g.latent_w,
                        audio_frames=g.audio_frames, opts=request.sampling, image_latent=img, audio_latent=voice,
                        generator=gen, hooks=self._hooks(f"{request.sampling.mode} {g.width}x{g.height}"),
                        device=c.device)

    def _sr_model(self) -> nn.Module:
        c = self.components
        if c.sr_dit is None:
            raise ValueError("a super-resolution size was requested but no SR DiT was given")
        if not isinstance(c.sr_dit, nn.Module):
            c.sr_dit = c.sr_dit()  # lazy loader: the base DiT may already be gone
        return c.sr_dit

    def _sr_stage(self, request: ClipRequest, text: TextConditioning, gen: torch.Generator,
                  video: torch.Tensor, audio: torch.Tensor, timings: dict[str, float]):
        c, sg = self.components, request.sr_geometry
        if c.release_between_stages:
            c.dit = None
            free_memory()
        if not isinstance(c.sr_dit, nn.Module):
            self._timed(timings, "load SR DiT", self._sr_model)
        model = self._sr_model()
        img = None
        if request.image is not None:  # the reference re-encodes the picture at the SR size
            img = self._timed(timings, "encode inputs", lambda: image_latent(request.image, sg, c.encode_image))
        hooks = self._hooks(f"SR {sg.width}x{sg.height}")
        return self._timed(timings, "super-resolution", lambda: super_resolve(
            model, video, audio, text, latent_h=sg.latent_h, latent_w=sg.latent_w, generator=gen,
            opts=request.sr, image_latent=img, hooks=hooks, device=c.device))

    def _decode_audio(self, request: ClipRequest, audio: torch.Tensor, frames: int) -> torch.Tensor:
        decoded = self.components.decode_audio(audio).float().cpu()  # [2, 2048·F] at the nominal 51.2 kHz
        wave = output_audio(decoded, audio.shape[1], trim_to_video=request.match_audio_to_video)  # 44.1 kHz
        if request.match_audio_to_video and decoded.shape[-1] / AUDIO_NOMINAL_RATE > frames / FPS:
            log.info("HappyHorse: audio cut from %.2f s to the %d decoded video frames (%.2f s)",
                     decoded.shape[-1] / AUDIO_NOMINAL_RATE, frames, frames / FPS)
        return wave

    def run(self, request: ClipRequest, text: TextConditioning) -> ClipResult:
        """Sample, optionally super-resolve, and decode one clip. `text` from encode_text()."""
        c, timings = self.components, {}
        if request.needs_negative and text.negative is None:
            raise ValueError("this request uses CFG: encode the negative prompt too (encode_text does)")
        if request.sr_geometry is not None and c.sr_dit is None:
            raise ValueError("a super-resolution size was requested but no SR DiT was given")
        gen = make_generator(request.sampling.seed)  # one RNG stream through both stages, as the reference
        img = voice = None
        if request.image is not None or request.voice is not None:
            img, voice = self._timed(timings, "encode inputs", lambda: self._conditioning(request, request.geometry))
        video, audio = self._timed(timings, "sampling", lambda: self._base_stage(request, text, gen, img, voice))
        if request.sr_geometry is not None:
            video, _ = self._sr_stage(request, text, gen, video, audio, timings)
        progress = self.progress("decode video", "window") if self.progress else None
        decoded = self._timed(timings, "decode video", lambda: c.decode_video(video, progress))
        frames = self._timed(timings, "decode video", lambda: to_uint8_frames(decoded))
        del decoded
        wave = None
        if c.decode_audio is not None:
            wave = self._timed(timings, "decode audio", lambda: self._decode_audio(request, audio, frames.shape[0]))
        return ClipResult(frames, wave, video, audio, timings)
