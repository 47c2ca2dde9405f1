"""The sampler node: text (+ first frame, + voice) -> video and audio latents."""
from __future__ import annotations

import logging

import torch

from ..happyhorse_core.sampling.guidance import GuidanceConfig
from ..happyhorse_core.sampling.latents import audio_from_model, audio_to_model, video_from_model, video_to_model
from ..happyhorse_core.sampling.noise import batch_seed, generator_state, make_generator
from ..happyhorse_core.sampling.pipeline import generate, MODES, SamplingOptions, TextConditioning
from ..happyhorse_core.validation import check_clip_latents, check_guidance_widgets

from . import comfy_bridge as cb, comfy_layouts as layouts
from .comfy_bridge import io
from .node_warnings import collect
from .runtime import hooks_for, oom_advice, placed, run_shape
from .types import CATEGORY, HHConditioning, HHModel

log = logging.getLogger("HappyHorse")


class Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseSampler",
            display_name="HappyHorse Sampler (MagiHuman)",
            category=f"{CATEGORY}/sampling",
            description=("Generates video and synchronized audio. distilled = the distill checkpoint, 8 steps, no "
                         "CFG (fast); base = the base checkpoint, 32 steps with CFG (video 5.0 while t > 500 then "
                         "2.0, audio 5.0). With a first frame the clip starts on that image; with a voice latent the "
                         "lips follow that track. Cancel stops within one step."),
            inputs=[
                HHModel.Input("model"),
                HHConditioning.Input("conditioning"),
                io.Latent.Input("video_latent", tooltip="From HappyHorse Empty Latent (sets size and length)."),
                io.Latent.Input("audio_latent", tooltip="From HappyHorse Empty Latent (25 frames per second)."),
                io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Same seed, same clip. Clip b of a batch uses seed + b (wrapping at the "
                                     "maximum)."),
                io.Combo.Input("mode", options=list(MODES), default="distilled",
                               tooltip="distilled: 8 steps, 1 forward per step. base: CFG, 2 forwards per step."),
                io.Int.Input("steps", default=0, min=0, max=200,
                             tooltip="0 = the mode's default (8 distilled, 32 base)."),
                io.Float.Input("video_cfg", default=5.0, min=1.0, max=20.0, step=0.1,
                               tooltip="Base mode: video guidance while timestep > 500."),
                io.Float.Input("video_cfg_late", default=2.0, min=1.0, max=20.0, step=0.1,
                               tooltip="Base mode: video guidance for the last steps (timestep <= 500)."),
                io.Float.Input("audio_cfg", default=5.0, min=1.0, max=20.0, step=0.1,
                               tooltip="Base mode: audio guidance for every step."),
                io.Latent.Input("first_frame", optional=True, tooltip="From HappyHorse Image To Video."),
                io.Latent.Input("voice_latent", optional=True, tooltip="From HappyHorse Voice Reference."),
                io.Combo.Input("noise_device", options=list(NOISE_DEVICES), default="cpu", optional=True,
                               tooltip="cpu (default): a seed gives the same clip on every machine. gpu: noise is "
                                       "drawn on CUDA exactly as the reference does, so a seed reproduces the "
                                       "reference's clip on the same GPU model (falls back to cpu without CUDA)."),
            ],
            outputs=[io.Latent.Output(display_name="video_latent"), io.Latent.Output(display_name="audio_latent")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, conditioning, video_latent, audio_latent, seed, mode, steps, video_cfg, video_cfg_late,
                audio_cfg, first_frame=None, voice_latent=None, noise_device="cpu") -> io.NodeOutput:
        video = layouts.latent_samples(video_latent, "video")
        audio = layouts.latent_samples(audio_latent, "audio")
        check_clip_latents(video, audio)
        if model.variant.startswith("sr_"):
            raise ValueError("this is a super-resolution model; load the distill or base checkpoint for the "
                             "sampler and use the SR model in HappyHorse Super-Resolution")
        check_guidance_widgets(mode, video_cfg=video_cfg, video_cfg_late=video_cfg_late, audio_cfg=audio_cfg)
        guidance = (GuidanceConfig(video_scale=video_cfg, video_scale_late=video_cfg_late, audio_scale=audio_cfg)
                    if mode == "base" else GuidanceConfig())  # distilled: no CFG, the widgets are unused
        text = TextConditioning(conditioning.positive, _negative(conditioning, mode == "base", cls.hidden.unique_id))
        image = video_to_model(layouts.latent_samples(first_frame, "video")[:1]) if first_frame is not None else None
        voice = audio_to_model(layouts.latent_samples(voice_latent, "audio")[:1]) if voice_latent is not None else None
        run = run_shape(video.shape[2], video.shape[3], video.shape[4], audio.shape[2], text, cfg=mode == "base")
        outs_v, outs_a, streams = [], [], []
        with collect(cls.hidden.unique_id) as note, oom_advice("the HappyHorse sampler", model), \
                placed(model, run) as device:
            note(mode_mismatch(model.variant, mode))
            noise_dev = noise_device_for(noise_device, device, note)
            for b in range(video.shape[0]):
                opts = SamplingOptions(mode=mode, steps=steps or None, seed=batch_seed(seed, b), guidance=guidance)
                gen = make_generator(opts.seed, noise_dev)
                v, a = generate(model.model, text, latent_frames=video.shape[2], latent_h=video.shape[3],
                                latent_w=video.shape[4], audio_frames=audio.shape[2], opts=opts, image_latent=image,
                                audio_latent=voice, generator=gen, hooks=hooks_for(cls.hidden.unique_id, opts.steps),
                                device=device)
                outs_v.append(video_from_model(v))
                outs_a.append(audio_from_model(a))
                streams.append(generator_state(gen))  # HappyHorse Super-Resolution continues from here
        dev = cb.intermediate_device()
        out_video = layouts.video_latent(torch.cat(outs_v).to(dev))
        out_video[NOISE_STREAM_KEY] = streams
        return io.NodeOutput(out_video, layouts.audio_latent(torch.cat(outs_a).to(dev)))


NOISE_DEVICES = ("cpu", "gpu")
NOISE_STREAM_KEY = "happyhorse_noise_stream"  # video LATENT key: per clip, where the sampler's RNG stopped


def mode_mismatch(variant: str, mode: str) -> str | None:
    """A warning when a base checkpoint runs in distilled mode or a distilled one in base mode."""
    if variant == "base" and mode == "distilled":
        return ("the base checkpoint is running in distilled mode (8 steps, no CFG): expect a blurry, unfinished "
                "clip. Set mode to base, or load the distill checkpoint")
    if variant == "distill" and mode == "base":
        return ("the distilled checkpoint is running in base mode (32 steps + CFG): it was trained for 8 steps "
                "without CFG. Set mode to distilled, or load the base checkpoint")
    return None


def noise_device_for(choice: str, compute_device: torch.device, note) -> str:
    """'cpu' -> cpu; 'gpu' -> the CUDA compute device, or cpu with a warning when there is none."""
    if choice == "gpu":
        if compute_device.type == "cuda":
            return str(compute_device)
        note(f"noise_device gpu needs a CUDA device (running on {compute_device.type}); noise is drawn on the CPU")
    return "cpu"


def _negative(conditioning, needed: bool, node_id):
    """The negative prompt's rows when CFG needs them (PromptPair.negative_features: encoded on first use),
    else None."""
    return conditioning.negative_features(node_id) if needed else None


NODES = [Sampler]
