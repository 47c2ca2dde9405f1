"""The denoising loop: text(+image, +voice) -> video and audio latents (MODEL_SPEC §4.1-4.3, §4.7).

Two modes:
  * "distilled": one conditional forward per step and the re-noising DDIM-like update with
    fresh noise every step (8 steps by default, no CFG);
  * "base": conditional + negative-prompt forward per step, CFG (video 5.0 while t > 500 then
    2.0, audio 5.0) and the flow UniPC update (32 steps by default).

Latents here are in MODEL space (Wan2.2 latents already normalised by the 48-channel mean/std;
audio latents as the Stable Audio VAE gives them). Hosts convert at their boundary.
Image-to-video overwrites latent frame 0 with the clean image latent before every call and
once after the loop (§2.4). A supplied voice latent is fed as audio tokens and, in base mode,
never updated. In distilled mode the reference also re-noises the supplied audio each step
(§4.3); we do the same so that results match it, and report the voice latent unchanged only
in base mode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from ..dit.cache import StepCache
from ..errors import CheckpointError
from .guidance import GuidanceConfig, apply_cfg, video_scale
from .noise import distill_step_noise, initial_noise, make_generator
from .scheduler import FlowUniPC, flow_sigmas, step_ddim
from ..dit.sequence import pack, unpack

ProgressFn = Callable[[int, int], None]  # (steps done, total steps)
InterruptFn = Callable[[], None]  # raises to stop
PreviewFn = Callable[[int, torch.Tensor], None]  # (step, x0 video latent [1, 48, T, h, w])

MODES = ("distilled", "base")
DEFAULT_STEPS = {"distilled": 8, "base": 32}


@dataclass
class TextConditioning:
    """Encoded prompt rows (the DiT only ever sees the real tokens, never padding)."""

    positive: torch.Tensor  # [n, Dt] fp32
    negative: Optional[torch.Tensor] = None  # [m, Dt] fp32; needed for CFG


@dataclass
class SamplingOptions:
    mode: str = "distilled"
    steps: Optional[int] = None  # None -> 8 (distilled) / 32 (base)
    seed: int = 42
    shift: float = 5.0
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"sampling mode must be one of {MODES}, got {self.mode!r}")
        if self.steps is None:
            self.steps = DEFAULT_STEPS[self.mode]
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")


@dataclass
class Hooks:
    progress: Optional[ProgressFn] = None
    interrupt: Optional[InterruptFn] = None
    preview: Optional[PreviewFn] = None

    def before_step(self) -> None:
        if self.interrupt is not None:
            self.interrupt()

    def after_step(self, done: int, total: int, x0_video: torch.Tensor) -> None:
        if self.preview is not None:
            self.preview(done, x0_video)
        if self.progress is not None:
            self.progress(done, total)


class Denoiser:
    """Calls the DiT on latents: packs, runs, unpacks. Returns velocities in fp32.

    What is constant over a sampling run is prepared once: the device copy of each prompt's
    features, the token coordinates per geometry, and (inside the model, through `cache`) the
    text embedder output and RoPE table. Use one Denoiser per run.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device | str | None = None) -> None:
        self.model = model
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.style = model.config.coords_style
        self.cache = StepCache()
        self._coords: dict[tuple, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, video: torch.Tensor, audio: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seq = pack(video, audio, text, style=self.style)
        dev = self.device
        text_dev = self.cache.get("text", text, lambda t: t.to(dev, torch.float32))  # same object every step
        key = (seq.grid, seq.audio.shape[0], seq.text.shape[0])
        coords = self._coords.get(key)
        if coords is None:  # (setdefault would copy seq.coords to the device on every call, cached or not)
            coords = self._coords[key] = seq.coords.to(dev)
        v_tok, a_tok = self.model(seq.video.to(dev), seq.audio.to(dev), text_dev, coords, seq.tokens_per_frame,
                                  cache=self.cache)
        check_model_output(self.model, v_tok, a_tok)
        v, a = unpack(v_tok, a_tok, seq)
        return v.to(video.device), a.to(audio.device)


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def check_text(model: torch.nn.Module, text: TextConditioning) -> None:
    """Text rows must be [n >= 1, text_in_channels] and finite (a wrong encoder gives another width)."""
    want = getattr(getattr(model, "config", None), "text_in_channels", None)
    for name, rows in (("prompt", text.positive), ("negative prompt", text.negative)):
        if rows is None:
            continue
        if rows.ndim != 2 or rows.shape[0] == 0:
            raise ValueError(f"the {name} encoded to no tokens (features {list(rows.shape)}); write a prompt "
                             "(even one word)")
        if want is not None and rows.shape[1] != want:
            raise ValueError(f"the {name} features are {rows.shape[1]} wide but this DiT reads {want}-wide text "
                             "features (T5Gemma-9B); connect HappyHorse Text Encode fed by the T5Gemma encoder")
        if not torch.isfinite(rows).all():
            raise ValueError(f"the {name} features contain NaN/Inf values; reload the text encoder (bf16 or fp32)")


def model_source(model: torch.nn.Module) -> str:
    """The weights file a loaded DiT came from (its load report), for messages."""
    report = getattr(model, "load_report", None)
    return str(getattr(report, "source", None) or "the DiT weights file")


def check_model_output(model: torch.nn.Module, v_tok: torch.Tensor, a_tok: torch.Tensor) -> None:
    """The DiT's own output must be finite: NaN/Inf here comes from its weights, so the message names
    the model file (checked on every forward, so a broken file stops at the first step)."""
    for what, x in (("video", v_tok), ("audio", a_tok)):
        if not bool(torch.isfinite(x).all()):
            raise CheckpointError(f"the DiT produced NaN/Inf {what} values from finite inputs: the weights in "
                             f"{model_source(model)} are damaged (NaN/Inf) or overflow their dtype. Download or "
                             "convert that file again; if it is an fp8 file, try the bf16 release")


def check_finite(x: Optional[torch.Tensor], what: str) -> None:
    if x is not None and not torch.isfinite(x).all():
        raise ValueError(f"the {what} contains NaN/Inf values; check the node that produced it")


def _check_inputs(model, text: TextConditioning, opts: SamplingOptions, latent_shape, audio_frames: int,
                  image_latent, audio_latent) -> None:
    check_text(model, text)
    if opts.mode == "base" and text.negative is None:
        raise ValueError("base mode uses CFG and needs the negative prompt's embedding")
    _, _, T, h, w = latent_shape
    if min(T, h, w, audio_frames) < 1:
        raise ValueError(f"the clip is empty (latent frames {T}, size {h}x{w}, audio frames {audio_frames}); "
                         "make the latents with HappyHorse Empty Latent (1-15 s)")
    if (audio_frames - 1) // 4 + 1 != T:
        raise ValueError(f"{audio_frames} audio frames do not fit {T} latent video frames (a clip of s seconds has "
                         "25*s+1 audio frames and (25*s)//4+1 latent frames); take both from one ClipGeometry / "
                         "HappyHorse Empty Latent")
    if image_latent is not None and tuple(image_latent.shape) != (1, 48, 1, h, w):
        raise ValueError(f"image latent must be [1, 48, 1, {h}, {w}] to match the video, got {list(image_latent.shape)}")
    if audio_latent is not None and (audio_latent.ndim != 3 or audio_latent.shape[2] != 64):
        raise ValueError(f"voice latent must be [1, F, 64], got {list(audio_latent.shape)}")
    check_finite(image_latent, "first-frame image latent")
    check_finite(audio_latent, "voice latent")


def generate(model: torch.nn.Module, text: TextConditioning, *, latent_frames: int, latent_h: int, latent_w: int,
             audio_frames: int, opts: SamplingOptions, image_latent: Optional[torch.Tensor] = None,
             audio_latent: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
             hooks: Optional[Hooks] = None, device: torch.device | str | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one clip. Returns (video latent [1, 48, T, h, w], audio latent [1, F, 64]), model space, fp32 CPU.

    `generator` defaults to a CPU one seeded with opts.seed; pass the same generator (or its saved
    state, noise.generator_state) on to the SR stage to continue the reference's single RNG stream.
    A CUDA generator draws the noise on the GPU as the reference does (noise.py).
    """
    hooks = hooks or Hooks()
    gen = generator if generator is not None else make_generator(opts.seed)
    shape = (1, 48, latent_frames, latent_h, latent_w)
    _check_inputs(model, text, opts, shape, audio_frames, image_latent, audio_latent)
    if audio_latent is not None and audio_latent.shape[1] != audio_frames:
        raise ValueError(f"voice latent has {audio_latent.shape[1]} frames but the clip needs {audio_frames}; "
                         "trim or pad the audio to the clip length first")
    audio_noise, video = initial_noise(gen, audio_frames, latent_frames, latent_h, latent_w,
                                       draw_audio=audio_latent is None)
    # everything lives on the generator's device (CPU by default; CUDA for reference-exact noise)
    audio = audio_latent.float().clone().to(video.device) if audio_latent is not None else audio_noise
    if image_latent is not None:
        image_latent = image_latent.float().to(video.device)
    denoise = Denoiser(model, device)
    sigmas, timesteps = flow_sigmas(opts.steps, opts.shift)
    fixed_audio = audio_latent is not None
    unipc = (FlowUniPC(opts.steps, opts.shift), FlowUniPC(opts.steps, opts.shift)) if opts.mode == "base" else None
    for i in range(opts.steps):
        hooks.before_step()
        if image_latent is not None:
            video[:, :, :1] = image_latent
        v_vid, v_aud = denoise(video, audio, text.positive)
        if opts.mode == "base":
            if hooks.interrupt is not None:  # a CFG step is two forwards: allow Cancel between them
                hooks.interrupt()
            u_vid, u_aud = denoise(video, audio, text.negative)
            v_vid = apply_cfg(v_vid, u_vid, video_scale(opts.guidance, timesteps[i]))
            v_aud = apply_cfg(v_aud, u_aud, opts.guidance.audio_scale)
        x0_video = video - sigmas[i] * v_vid
        if opts.mode == "distilled":
            n_vid, n_aud = distill_step_noise(gen, video.shape, audio.shape)
            video = step_ddim(v_vid, sigmas[i], sigmas[i + 1], video, n_vid)
            audio = step_ddim(v_aud, sigmas[i], sigmas[i + 1], audio, n_aud)
        else:
            video = unipc[0].step_x0(x0_video, i, video)  # x0_video: this step's x0, computed once above
            if not fixed_audio:
                audio = unipc[1].step(v_aud, i, audio)
        hooks.after_step(i + 1, opts.steps, x0_video)
    if image_latent is not None:
        video[:, :, :1] = image_latent
    return video.cpu(), audio.cpu()
