"""The use cases people come for, as workflows: talking photo, image-to-video at 1080p, base model + SR.

Registered with @workflow (scripts/workflow_specs.py imports this module in all_workflows()).

The 1080p workflows that start on an image give it to HappyHorse Super-Resolution too, which re-encodes
it at the SR size (image + vae inputs, as the reference does). With a Super-Resolution node that has no
image input yet, the image is encoded a second time through an Empty Latent at 1080p with the same aspect
and seconds (its size is the SR target) into first_frame. Likewise the mp4's sound is Voice Reference's
voice_for_video (the recording cut to the clip) when that output exists, else core Trim Audio Duration.
The live schema decides (workflow_specs.has_input / has_output, read when the files are built).
"""
from __future__ import annotations

from workflow_specs import (START_IMAGE, VOICE_LINE, VOICE_TRACK, Workflow, audio_vae_loader, columns, decoders,
                            empty_latent, has_input, has_output, link, model_loader, original_voice, sampler,
                            save_nodes, sr_loader, start_image, super_resolution, text_nodes, voice, wan_vae_loader,
                            workflow)

SR_LATENT_TITLE = "SR size (1080p, same aspect and seconds)"
SR_DECODE = {"video_src": ("sr", "video_latent"), "audio_src": ("sr", "audio_latent")}


def _sr_first_frame(col_latent: int, col_image: int, seconds: int) -> list:
    """Nothing when SR takes the image itself; else Empty Latent at the SR size + Image To Video (key i2v_sr)."""
    if has_input("HappyHorseSuperResolution", "image"):
        return []
    return [empty_latent(col=col_latent, seconds=seconds, key="latent_sr", title=SR_LATENT_TITLE,
                         resolution="1080p"),
            *start_image(col_image, key="i2v_sr", latent="latent_sr")]


def _sr_image(nodes: list) -> list:
    """SR keeps the start image as its first frame: image + vae when it has them, else the i2v_sr latent."""
    if has_input("HappyHorseSuperResolution", "image"):
        return link(nodes, "sr", image=("image", "IMAGE"), vae=("wan_vae", "VAE"))
    return link(nodes, "sr", first_frame=("i2v_sr", "first_frame"))


def _voice_for_video(col: int, seconds: int) -> tuple[list, tuple[str, str]]:
    """(extra nodes, the AUDIO for CreateVideo): the user's recording cut to the clip."""
    if has_output("HappyHorseAudioReference", "voice_for_video"):
        return [], ("voice_ref", "voice_for_video")
    return [original_voice(col, seconds)], ("voice_cut", "AUDIO")


@workflow
def talking_photo() -> Workflow:
    seconds = 5
    cut, sound = _voice_for_video(5, seconds)
    nodes = [model_loader(), sr_loader(), *text_nodes(line=VOICE_LINE), wan_vae_loader(), audio_vae_loader(),
             empty_latent(col=1, seconds=seconds), *start_image(2), *voice(2),
             *_sr_first_frame(1, 2, seconds),
             sampler(3), super_resolution(4), *decoders(5, audio=False, **SR_DECODE),
             *cut, *save_nodes(6, "hh_talking_photo", audio=sound)]
    link(nodes, "sampler", first_frame=("i2v", "first_frame"), voice_latent=("voice_ref", "voice_latent"))
    if has_input("HappyHorseEmptyLatent", "voice"):
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
    seconds = 2
    nodes = [model_loader(), sr_loader(), *text_nodes(), wan_vae_loader(), empty_latent(col=1, seconds=seconds),
             *start_image(2), *_sr_first_frame(1, 2, seconds), sampler(3), super_resolution(4),
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
