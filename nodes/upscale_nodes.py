"""Latent super-resolution node: a 256p clip lifted to 540p or 1080p by the SR DiT."""
from __future__ import annotations

import torch

from ..happyhorse_core.dit.memory_plan import RunShape
from ..happyhorse_core.sampling.latents import audio_to_model, video_from_model, video_to_model
from ..happyhorse_core.sampling.noise import make_generator
from ..happyhorse_core.sampling.pipeline import TextConditioning
from ..happyhorse_core.sampling.super_resolution import SR_TARGETS, SROptions, super_resolve
from ..happyhorse_core.validation import check_clip_latents, sr_latent_hw

from . import comfy_bridge as cb
from .comfy_bridge import io
from .runtime import hooks_for, oom_advice, placed
from .sampler_nodes import _negative
from .types import CATEGORY, HHConditioning, HHModel


class SuperResolution(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseSuperResolution",
            display_name="HappyHorse Super-Resolution",
            category=f"{CATEGORY}/sampling",
            description=("Lifts a finished 256p video latent to 540p (896x512 for 16:9) or 1080p (1920x1088) in "
                         "latent space: trilinear upsample, partial re-noise (a = 0.8389), then 5 steps of the SR "
                         "model (540p_sr or 1080p_sr checkpoint; the 1080p one uses windowed attention). The "
                         "audio is used as context only and passes through unchanged."),
            inputs=[
                HHModel.Input("sr_model", tooltip="A HappyHorse Model Loader with variant sr_540p or sr_1080p."),
                HHConditioning.Input("conditioning"),
                io.Latent.Input("video_latent", tooltip="The sampler's video latent (256p)."),
                io.Latent.Input("audio_latent", tooltip="The sampler's audio latent."),
                io.Combo.Input("resolution", options=list(SR_TARGETS), default="1080p",
                               tooltip="540p = 896x512, 1080p = 1920x1088 for 16:9; other aspects keep their ratio."),
                io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the SR re-noise and sampling noise (drawn on the CPU)."),
                io.Int.Input("steps", default=5, min=1, max=50, tooltip="SR steps; the model was trained for 5."),
                io.Boolean.Input("cfg", default=False,
                                 tooltip="Negative-prompt CFG (3.5, 2.0 on the first 13 latent frames). The published "
                                         "SR settings keep it off; on doubles the cost."),
                io.Latent.Input("first_frame", optional=True,
                                tooltip="Image To Video latent at the SR size (re-encode the image at that size)."),
            ],
            outputs=[io.Latent.Output(display_name="video_latent"), io.Latent.Output(display_name="audio_latent")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, sr_model, conditioning, video_latent, audio_latent, resolution, seed, steps, cfg,
                first_frame=None) -> io.NodeOutput:
        video = cb.latent_samples(video_latent, "video")
        audio = cb.latent_samples(audio_latent, "audio")
        check_clip_latents(video, audio)
        if not sr_model.variant.startswith("sr_"):
            raise ValueError(f"the model connected to sr_model was loaded as '{sr_model.variant}'; load the "
                             "540p_sr or 1080p_sr checkpoint (variant sr_540p / sr_1080p) for super-resolution")
        lh, lw = sr_latent_hw(video.shape[3], video.shape[4], resolution)
        image = None
        if first_frame is not None:
            image = video_to_model(cb.latent_samples(first_frame, "video")[:1])
            if tuple(image.shape[3:]) != (lh, lw):
                raise ValueError(f"first_frame latent is {list(image.shape[3:])} but the SR latent is [{lh}, {lw}]; "
                                 "encode the image at the SR size")
        text = TextConditioning(conditioning.positive, _negative(conditioning, cfg, cls.hidden.unique_id))
        run = RunShape.from_latents(video.shape[2], lh, lw, audio.shape[2],
                                    max(t.shape[0] for t in (text.positive, text.negative) if t is not None), cfg=cfg)
        outs = []
        with oom_advice("HappyHorse Super-Resolution", sr_model), placed(sr_model, run) as device:
            for b in range(video.shape[0]):
                v, _ = super_resolve(sr_model.model, video_to_model(video[b:b + 1]), audio_to_model(audio[b:b + 1]),
                                     text, latent_h=lh, latent_w=lw, generator=make_generator(seed + b),
                                     opts=SROptions(steps=steps, cfg=cfg), image_latent=image,
                                     hooks=hooks_for(cls.hidden.unique_id, steps), device=device)
                outs.append(video_from_model(v))
        return io.NodeOutput(cb.video_latent(torch.cat(outs).to(cb.intermediate_device())), audio_latent)


NODES = [SuperResolution]
