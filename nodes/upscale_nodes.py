"""Latent super-resolution node: a 256p clip lifted to 540p or 1080p by the SR DiT."""
from __future__ import annotations

import torch

from ..happyhorse_core.sampling.guidance import GuidanceConfig
from ..happyhorse_core.sampling.latents import audio_to_model, video_from_model, video_to_model
from ..happyhorse_core.sampling.noise import batch_seed, make_generator, restore_generator
from ..happyhorse_core.sampling.pipeline import TextConditioning
from ..happyhorse_core.sampling.scheduler import NUM_TRAIN_TIMESTEPS, SR_RENOISE_INDEX
from ..happyhorse_core.sampling.super_resolution import SR_TARGETS, SROptions, super_resolve
from ..happyhorse_core.validation import check_clip_latents, sr_latent_hw

from . import comfy_bridge as cb, comfy_layouts as layouts
from .comfy_bridge import io
from .encode_nodes import encode_start_frame
from .node_warnings import collect
from .runtime import hooks_for, oom_advice, placed, run_shape
from .sampler_nodes import NOISE_DEVICES, NOISE_STREAM_KEY, _negative, noise_device_for
from .types import CATEGORY, HHConditioning, HHModel

CONTINUE_SEED = -1  # SR seed widget value: continue the sampler's noise stream (the reference's single stream)
FALLBACK_SEED = 42  # the reference's default seed, used when a latent carries no stream to continue


class SuperResolution(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseSuperResolution",
            display_name="HappyHorse Super-Resolution",
            category=f"{CATEGORY}/sampling",
            description=("Lifts a finished 256p video latent to 540p (896x512 for 16:9) or 1080p (1920x1088) in "
                         "latent space: trilinear upsample, partial re-noise (renoise_level 220: a = 0.8389), then "
                         "5 steps of the SR model (540p_sr or 1080p_sr checkpoint; the 1080p one uses windowed "
                         "attention). With a start image (+ the Wan2.2 VAE) the first frame is re-encoded at the SR "
                         "size, as the reference does. The audio is context only and passes through unchanged."),
            inputs=[
                HHModel.Input("sr_model", tooltip="A HappyHorse Model Loader with variant sr_540p or sr_1080p."),
                HHConditioning.Input("conditioning"),
                io.Latent.Input("video_latent", tooltip="The sampler's video latent (256p)."),
                io.Latent.Input("audio_latent", tooltip="The sampler's audio latent."),
                io.Combo.Input("resolution", options=list(SR_TARGETS), default="1080p",
                               tooltip="540p = 896x512, 1080p = 1920x1088 for 16:9; other aspects keep their ratio."),
                io.Int.Input("seed", default=CONTINUE_SEED, min=CONTINUE_SEED, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="-1 (default) = continue the HappyHorse Sampler's noise stream, as the reference "
                                     "does with one seed for both stages. 0 or more = a fresh stream from that seed "
                                     "(clip b of a batch: seed + b)."),
                io.Int.Input("steps", default=5, min=1, max=50, tooltip="SR steps; the model was trained for 5."),
                io.Boolean.Input("cfg", default=False,
                                 tooltip="Negative-prompt CFG at cfg_scale (the first 13 latent frames capped at 2.0). "
                                         "The published SR configs keep it off; on doubles the cost."),
                io.Latent.Input("first_frame", optional=True,
                                tooltip="Image To Video latent already at the SR size. Simpler: connect image + vae."),
                io.Image.Input("image", optional=True,
                               tooltip="The start image: re-encoded at the SR size with the vae below and kept as "
                                       "the first frame (the reference's image-to-video SR)."),
                io.Vae.Input("vae", optional=True, tooltip="The Wan2.2 VAE, needed with image."),
                io.Float.Input("cfg_scale", default=3.5, min=1.0, max=20.0, step=0.1, optional=True,
                               tooltip="Video CFG scale when cfg is on (reference SR: 3.5)."),
                io.Int.Input("renoise_level", default=SR_RENOISE_INDEX, min=0, max=NUM_TRAIN_TIMESTEPS - 1,
                             optional=True,
                             tooltip="SR strength: how much noise goes onto the upsampled clip before the SR model "
                                     "(index into the zero-SNR schedule; reference 220 keeps a = 0.84 of the clip). "
                                     "0 = none (most faithful); higher = more new detail, less like the 256p clip."),
                io.Combo.Input("noise_device", options=list(NOISE_DEVICES), default="cpu", optional=True,
                               tooltip="For seed >= 0: cpu, or gpu for the reference's CUDA noise. seed -1 continues "
                                       "on the device the sampler used."),
            ],
            outputs=[io.Latent.Output(display_name="video_latent"), io.Latent.Output(display_name="audio_latent")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, sr_model, conditioning, video_latent, audio_latent, resolution, seed, steps, cfg,
                first_frame=None, image=None, vae=None, cfg_scale=3.5, renoise_level=SR_RENOISE_INDEX,
                noise_device="cpu") -> io.NodeOutput:
        video = layouts.latent_samples(video_latent, "video")
        audio = layouts.latent_samples(audio_latent, "audio")
        check_clip_latents(video, audio)
        if not sr_model.variant.startswith("sr_"):
            raise ValueError(f"the model connected to sr_model was loaded as '{sr_model.variant}'; load the "
                             "540p_sr or 1080p_sr checkpoint (variant sr_540p / sr_1080p) for super-resolution")
        lh, lw = sr_latent_hw(video.shape[3], video.shape[4], resolution)
        opts = SROptions(steps=steps, cfg=cfg, guidance=GuidanceConfig(sr_video_scale=cfg_scale),
                         renoise_index=renoise_level)
        outs = []
        with collect(cls.hidden.unique_id) as note:
            image_latent = sr_first_frame(first_frame, image, vae, lh, lw)
            text = TextConditioning(conditioning.positive, _negative(conditioning, cfg, cls.hidden.unique_id))
            run = run_shape(video.shape[2], lh, lw, audio.shape[2], text, cfg=cfg)
            with oom_advice("HappyHorse Super-Resolution", sr_model), placed(sr_model, run) as device:
                for b in range(video.shape[0]):
                    gen = sr_generator(video_latent, b, seed, noise_device, device, note)
                    v, _ = super_resolve(sr_model.model, video_to_model(video[b:b + 1]),
                                         audio_to_model(audio[b:b + 1]), text, latent_h=lh, latent_w=lw,
                                         generator=gen, opts=opts, image_latent=image_latent,
                                         hooks=hooks_for(cls.hidden.unique_id, steps), device=device)
                    outs.append(video_from_model(v))
        return io.NodeOutput(layouts.video_latent(torch.cat(outs).to(cb.intermediate_device())), audio_latent)


def sr_first_frame(first_frame, image, vae, lh: int, lw: int):
    """Model-space first-frame latent [1, 48, 1, lh, lw] at the SR size, or None.

    image + vae: the picture is encoded at the SR size here (what the reference does); first_frame: a
    latent already encoded at that size. image wins when both are connected."""
    if image is not None:
        if vae is None:
            raise ValueError("HappyHorse Super-Resolution got an image but no vae: connect the Wan2.2 VAE "
                             "(VAE Loader: wan2.2_vae) so the first frame can be encoded at the SR size")
        return video_to_model(encode_start_frame(image, vae, lh, lw))
    if first_frame is None:
        return None
    latent = video_to_model(layouts.latent_samples(first_frame, "video")[:1])
    if tuple(latent.shape[3:]) != (lh, lw):
        raise ValueError(f"first_frame latent is {list(latent.shape[3:])} but the SR latent is [{lh}, {lw}]; "
                         "connect the start image and the Wan2.2 VAE to this node instead (they are encoded at "
                         "the SR size here)")
    return latent


def sr_generator(video_latent: dict, index: int, seed: int, noise_device: str, compute_device, note):
    """The noise generator of clip `index`: the sampler's saved stream (seed -1) or a fresh seeded one."""
    if seed == CONTINUE_SEED:
        streams = video_latent.get(NOISE_STREAM_KEY) if isinstance(video_latent, dict) else None
        if streams and index < len(streams):
            saved = streams[index]
            if str(saved["device"]).startswith("cuda") and not torch.cuda.is_available():
                note("the sampler drew its noise on CUDA but CUDA is not available here; SR starts a CPU stream "
                     f"from seed {FALLBACK_SEED}")
                return make_generator(batch_seed(FALLBACK_SEED, index))
            return restore_generator(saved)
        note("seed -1 continues the HappyHorse Sampler's noise stream, but this video latent does not come "
             f"straight from the sampler; using seed {FALLBACK_SEED + index} (set seed >= 0 to choose one)")
        seed = FALLBACK_SEED
    return make_generator(batch_seed(seed, index), noise_device_for(noise_device, compute_device, note))


NODES = [SuperResolution]
