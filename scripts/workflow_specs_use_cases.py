"""The use cases people come for, as workflows: talking photo, image-to-video at 1080p, base model + SR.

Registered with @workflow (scripts/workflow_specs.py imports this module in all_workflows()).

The 1080p workflows that start on an image give it to HappyHorse Super-Resolution too, which re-encodes
it at the SR size (image + vae inputs, as the reference does). The talking photo's mp4 carries Voice
Reference's voice_for_video (the recording cut to the clip).
"""
from __future__ import annotations

from workflow_specs import (START_IMAGE, VOICE_LINE, VOICE_TRACK, Workflow, audio_vae_loader, columns, decoders,
                            empty_latent, link, model_loader, sampler, save_nodes, sr_loader, start_image,
                            super_resolution, text_nodes, voice, wan_vae_loader, workflow)

SR_DECODE = {"video_src": ("sr", "video_latent"), "audio_src": ("sr", "audio_latent")}


def _sr_image(nodes: list) -> list:
    """SR keeps the start image as its first frame: it re-encodes the image with the Wan2.2 VAE at its size."""
    return link(nodes, "sr", image=("image", "IMAGE"), vae=("wan_vae", "VAE"))


@workflow
def talking_photo() -> Workflow:
    nodes = [model_loader(), sr_loader(), *text_nodes(line=VOICE_LINE), wan_vae_loader(), audio_vae_loader(),
             empty_latent(col=1, seconds=5), *start_image(2), *voice(2),
             sampler(3), super_resolution(4), *decoders(5, audio=False, **SR_DECODE),
             *save_nodes(6, "hh_talking_photo", audio=("voice_ref", "voice_for_video"))]
    link(nodes, "sampler", first_frame=("i2v", "first_frame"), voice_latent=("voice_ref", "voice_latent"))
    link(nodes, "latent", voice=("voice", "AUDIO"))  # the clip lasts as long as the recording (at most seconds)
    _sr_image(nodes)
    return Workflow(
        "HappyHorse Talking Photo 1080p", "HappyHorse: talking photo (your image + your voice, 1080p, 5 s)",
        "Your photo speaks your recording: the image becomes the first frame, the voice drives the lips "
        "(HappyHorse Voice Reference), the distilled model samples at 256p and the 1080p SR model lifts the "
        "clip to 1920x1088 (16:9) with your photo as its first frame. The mp4 carries your ORIGINAL "
        "recording, cut to the clip (SaveVideo ends the sound on the last frame). Write what is said in "
        "'line' and describe the person in the prompt.",
        ["distill", "sr_1080p", "text_encoder", "wan22_vae", "turbo_vaed", "sao_vae"], nodes,
        inputs=[START_IMAGE, VOICE_TRACK],
        groups=columns("Models", "Prompt and clip size", "Your photo and voice", "Generate at 256p",
                       "Super-resolution 1080p", "Decode", "Video", "Save"))


@workflow
def i2v_sr1080() -> Workflow:
    nodes = [model_loader(), sr_loader(), *text_nodes(), wan_vae_loader(), empty_latent(col=1, seconds=2),
             *start_image(2), sampler(3), super_resolution(4),
             *decoders(5, **SR_DECODE), *save_nodes(6, "hh_i2v_1080p")]
    link(nodes, "sampler", first_frame=("i2v", "first_frame"))
    _sr_image(nodes)
    return Workflow(
        "HappyHorse Image to Video 1080p with SR", "HappyHorse: image to video + audio at 1080p (2 s)",
        "The clip starts on your image: the distilled model samples video and sound at 256p with the image as "
        "its first frame, then the 1080p SR model refines the upsampled latent in 5 steps with the image "
        "re-encoded at 1920x1088 as the first frame. The sound is decoded from the (unchanged) audio latent.",
        ["distill", "sr_1080p", "text_encoder", "wan22_vae", "turbo_vaed", "sao_vae"], nodes,
        inputs=[START_IMAGE],
        groups=columns("Models", "Prompt and clip size", "Start image", "Generate at 256p",
                       "Super-resolution 1080p", "Decode", "Video", "Save"))


@workflow
def base_sr1080() -> Workflow:
    nodes = [model_loader(file="base", variant="base"), sr_loader(), *text_nodes(), empty_latent(),
             sampler(2, mode="base", steps=32), super_resolution(3), *decoders(4, **SR_DECODE),
             *save_nodes(5, "hh_base_1080p")]
    return Workflow(
        "HappyHorse Base Model and SR 1080p", "HappyHorse: base model with CFG, then 1080p SR (2 s)",
        "The reference's own example order: the undistilled base model (32 steps, CFG; the negative prompt "
        "is used) makes the 256p clip, then the 1080p SR model lifts it to 1920x1088 in 5 steps. The slowest "
        "and most faithful route; the distilled workflows are the fast one.",
        ["base", "sr_1080p", "text_encoder", "turbo_vaed", "sao_vae"], nodes,
        groups=columns("Models", "Prompt and clip size", "Generate at 256p (base)", "Super-resolution 1080p",
                       "Decode", "Video", "Save"))
