"""Conditioning nodes: prompt encoding, empty latents, first-frame image and voice reference.

LATENTs hold RAW VAE-space values as everywhere in ComfyUI (the native Wan2.2 VAE Decode works on
our video latent). The Wan2.2 mean/std normalisation into model space happens in the sampler.
"""
from __future__ import annotations

import contextlib
import functools
import logging

import torch

from ..happyhorse_core.geometry import (ASPECTS, AUDIO_HOP, AUDIO_NOMINAL_RATE as NOMINAL_RATE, ClipGeometry,
                                        RESOLUTION_SHORT_SIDE, check_batch)
from ..happyhorse_core.media.audio import prepare_voice_track
from ..happyhorse_core.media.read import center_crop_to_aspect
from ..happyhorse_core.media.shrink import shrink_early, shrink_factor
from ..happyhorse_core.text.bounds import check_unicode, truncation_message
from ..happyhorse_core.text.encoder import encode_prompt
from ..happyhorse_core.text.prompts import build_prompt, DEFAULT_NEGATIVE_PROMPT, LANGUAGES
from ..happyhorse_core.validation import parse_dialogue, start_image

from . import comfy_bridge as cb, ram_plan
from .comfy_bridge import io
from .node_warnings import warn_all
from .runtime import oom_advice
from .types import CATEGORY, HHConditioning, HHTextEncoder, PromptPair

log = logging.getLogger("HappyHorse")


def _languages() -> list[str]:
    return list(LANGUAGES)


class TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseTextEncode",
            display_name="HappyHorse Text Encode",
            category=f"{CATEGORY}/conditioning",
            description=("Builds the structured prompt the model was trained on (scene, Dialogue:, Background "
                         "Sound:) and encodes it and the negative prompt with T5Gemma (at most 640 tokens each; "
                         "longer prompts are cut with a warning). Speech in Mandarin, Cantonese, English, "
                         "Japanese, Korean, German or French; CJK lines are spaced per character automatically."),
            inputs=[
                HHTextEncoder.Input("text_encoder"),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="Scene description in English (150-200 words work best): who is there, "
                                        "expressions and lip movement, voice delivery, camera, lighting."),
                io.String.Input("speaker", default="A woman", tooltip="Short description of who speaks the line."),
                io.Combo.Input("language", options=_languages(), default="English",
                               tooltip="Language of the spoken line (one of the seven the model speaks)."),
                io.String.Input("line", multiline=True, default="",
                                tooltip="What the speaker says, in that language. Leave empty for no speech."),
                io.String.Input("more_dialogue", multiline=True, default="",
                                tooltip="Further utterances, one per line: speaker | Language | line"),
                io.String.Input("background_sound", default="",
                                tooltip="Most prominent background sound; empty = 'No prominent background sound'."),
                io.String.Input("negative_prompt", multiline=True, default=DEFAULT_NEGATIVE_PROMPT,
                                tooltip="Used by base-model CFG (and SR CFG); ignored by the distilled model."),
            ],
            outputs=[HHConditioning.Output(display_name="conditioning")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, text_encoder, prompt, speaker, language, line, more_dialogue, background_sound,
                negative_prompt) -> io.NodeOutput:
        node_id = cls.hidden.unique_id
        notes: list[str] = []
        full = build_prompt(prompt, parse_dialogue(speaker, language, line, more_dialogue, warn=notes.append),
                            background_sound)
        negative = negative_prompt if negative_prompt.strip() else "low quality"
        check_unicode(negative, "negative prompt")  # fail here, not later in the sampler
        neg = None
        with _encoder_ready(text_encoder):
            pos = _encode(text_encoder, full, "prompt", node_id, notes)
            if text_encoder.release_after_encoding:  # it leaves RAM now: encode the negative while it is here
                neg = _encode(text_encoder, negative, "negative prompt", node_id, notes).features
        if text_encoder.release_after_encoding:
            ram_plan.release(text_encoder, cb.unload_patcher, why="release_after_encoding")
        warn_all(node_id, notes)
        # otherwise encoded only if a consumer runs CFG (base mode, SR with cfg): PromptPair.negative_features
        source = None if neg is not None else functools.partial(_encode_negative, text_encoder, negative)
        return io.NodeOutput(PromptPair(positive=pos.features, negative=neg, prompt=full,
                                        truncated=pos.truncated, negative_source=source))


@contextlib.contextmanager
def _encoder_ready(stack):
    """The text encoder in RAM (read again if the RAM plan released it) and placed by ComfyUI."""
    with oom_advice("the HappyHorse prompt node (T5Gemma text encoder)"):
        ram_plan.ensure_loaded(stack, rewrap=cb.wrap_model, unload=cb.unload_patcher)
        if stack.patcher is not None:
            cb.load_models([stack.patcher])
        yield


def _encode_negative(stack, text: str, node_id=None) -> torch.Tensor:
    """The negative prompt's rows, encoded when a consumer first needs them (warnings go to that node)."""
    notes: list[str] = []
    with _encoder_ready(stack):
        feats = _encode(stack, text, "negative prompt", node_id, notes)
    warn_all(node_id, notes)
    return feats.features


@torch.no_grad()
def _encode(stack, text: str, what: str, node_id, notes: list):
    """Tokens counted and cut to 640 first, then the encoder, layer by layer with Cancel and progress."""
    # compute where ComfyUI loads the encoder (a partial load leaves some layers in RAM: they are fetched)
    device = cb.torch_device() if stack.patcher is not None else next(stack.encoder.parameters()).device
    layers = len(stack.encoder.layers)
    bar = cb.ComfyProgress(layers, node_id=node_id)
    done = [0]

    def between_layers():  # Cancel lands within one layer; the bar shows the encode moving
        cb.interrupt_check()
        bar(done[0], layers)
        done[0] += 1

    feats = encode_prompt(stack.encoder, stack.tokenizer, text, device=device, what=what, interrupt=between_layers)
    bar(layers, layers)
    if feats.truncated:
        notes.append(truncation_message(what, feats.tokens))
    return feats._replace(features=feats.features.cpu())


class EmptyLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseEmptyLatent",
            display_name="HappyHorse Empty Latent",
            category=f"{CATEGORY}/latent",
            description=("Empty video + audio latents for a clip at 25 fps: video [B, 48, T, H/16, W/16] (Wan2.2 "
                         "VAE space, T = (25*seconds)/4 + 1) and audio [B, 64, 25*seconds + 1] (Stable Audio VAE "
                         "space at the model's 25 frames/s timing; decode it with HappyHorse Decode Audio, not "
                         "the native node)."),
            inputs=[
                io.Combo.Input("aspect", options=list(ASPECTS), default="16:9",
                               tooltip="16:9 256p = 448x256, 540p = 896x512, 1080p = 1920x1088."),
                io.Combo.Input("resolution", options=[*RESOLUTION_SHORT_SIDE, "custom"], default="256p",
                               tooltip="Generate at 256p and lift with HappyHorse Super-Resolution for 540p/1080p "
                                       "(the fast path); 'custom' uses width/height."),
                io.Int.Input("width", default=448, min=32, max=1920, step=32,
                             tooltip="Custom width in pixels (multiple of 32; others are floored with a warning)."),
                io.Int.Input("height", default=256, min=32, max=1920, step=32,
                             tooltip="Custom height in pixels (multiple of 32)."),
                io.Int.Input("seconds", default=5, min=1, max=15,
                             tooltip="Whole seconds at 25 fps: 5 s = 126 frames (125 decoded), 1-15."),
                io.Int.Input("batch_size", default=1, min=1, max=16, tooltip="Clips sampled one after another."),
            ],
            outputs=[io.Latent.Output(display_name="video_latent"), io.Latent.Output(display_name="audio_latent")],
        )

    @classmethod
    def execute(cls, aspect, resolution, width, height, seconds, batch_size) -> io.NodeOutput:
        if resolution == "custom":
            geo = ClipGeometry.from_request(width, height, seconds)
        else:
            geo = ClipGeometry.from_preset(aspect, resolution, seconds)
        check_batch(batch_size, geo)
        dev = cb.intermediate_device()
        video = torch.zeros((batch_size, *geo.video_latent_shape[1:]), device=dev)
        audio = torch.zeros((batch_size, 64, geo.audio_frames), device=dev)
        return io.NodeOutput(cb.video_latent(video), cb.audio_latent(audio))


class ImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseImageToVideo",
            display_name="HappyHorse Image To Video",
            category=f"{CATEGORY}/conditioning",
            description=("Encodes a start image with the native Wan2.2 VAE (VAE Loader: wan2.2_vae) into the "
                         "first-frame latent the sampler keeps fixed. The image is centre-cropped to the clip's "
                         "aspect and resized (lanczos) to its size. Batches use the first image."),
            inputs=[
                io.Image.Input("image", tooltip="Start frame (RGB; alpha is dropped, grayscale is expanded)."),
                io.Vae.Input("vae", tooltip="The Wan2.2 VAE (48 latent channels)."),
                io.Latent.Input("video_latent", tooltip="The clip's video latent (for the size)."),
            ],
            outputs=[io.Latent.Output(display_name="first_frame")],
        )

    @classmethod
    def execute(cls, image, vae, video_latent) -> io.NodeOutput:
        video = cb.latent_samples(video_latent, "video")
        h, w = video.shape[3] * 16, video.shape[4] * 16
        rgb = start_image(image)  # [1, H, W, 3]; warns when given a batch
        chw = rgb[0].movedim(-1, 0)  # [3, H, W], a view
        crop = center_crop_to_aspect(chw, w, h)  # a view
        if shrink_factor(crop.shape[1], crop.shape[2], h, w) > 1:  # >= 4x the clip: box-shrink it first, so that
            rgb = shrink_early(crop, w, h, interrupt=cb.interrupt_check).movedim(0, -1)[None]  # work follows the clip
        rgb = cb.resize_image(rgb, w, h)  # [1, h*16, w*16, 3], lanczos + center crop
        cb.interrupt_check()
        latent = vae.encode(rgb)  # [1, C, 1, h, w]
        if latent.ndim != 5 or latent.shape[1] != 48:
            raise ValueError(f"the VAE gave a latent of shape {list(latent.shape)}; connect the Wan2.2 VAE "
                             "(48 channels, e.g. wan2.2_vae.safetensors), not a Wan2.1 / SD VAE")
        return io.NodeOutput(cb.video_latent(latent[:, :, :1].float().to(cb.intermediate_device())))


class AudioReference(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseAudioReference",
            display_name="HappyHorse Voice Reference",
            category=f"{CATEGORY}/conditioning",
            description=("Encodes a voice track (any sample rate 8-192 kHz, mono/stereo/5.1) with the native "
                         "Stable Audio VAE into the audio latent that drives the lips. It is resampled to the "
                         "model's 51.2 kHz timing (25 latent frames/s) and cut or zero-padded to the clip."),
            inputs=[
                io.Audio.Input("audio", tooltip="The voice track (Load Audio)."),
                io.Vae.Input("vae", tooltip="The Stable Audio Open VAE (64 latent channels)."),
                io.Latent.Input("audio_latent", tooltip="The clip's audio latent (for the length)."),
            ],
            outputs=[io.Latent.Output(display_name="voice_latent")],
        )

    @classmethod
    def execute(cls, audio, vae, audio_latent) -> io.NodeOutput:
        frames = cb.latent_samples(audio_latent, "audio").shape[2]
        wave, rate = cb.audio_to_waveform(audio)
        cb.interrupt_check()
        prep = prepare_voice_track(wave, rate, NOMINAL_RATE, frames * AUDIO_HOP)
        cb.interrupt_check()
        if prep.trimmed:
            log.warning("HappyHorse: voice track (%.2f s) is longer than the clip; the end is cut",
                        prep.source_duration_s)
        if prep.padded:
            log.warning("HappyHorse: voice track (%.2f s) is shorter than the clip; padded with silence",
                        prep.source_duration_s)
        if prep.silent:
            log.warning("HappyHorse: the voice track is silent (peak below -60 dBFS)")
        latent = vae.encode(prep.waveform.unsqueeze(0).movedim(1, -1))  # [1, 64, F']
        if latent.ndim != 3 or latent.shape[1] != 64:
            raise ValueError(f"the VAE gave a latent of shape {list(latent.shape)}; connect the Stable Audio "
                             "Open VAE (64 channels)")
        latent = latent.float()[:, :, :frames]
        if latent.shape[2] < frames:
            latent = torch.nn.functional.pad(latent, (0, frames - latent.shape[2]))
        return io.NodeOutput(cb.audio_latent(latent.to(cb.intermediate_device())))


NODES = [TextEncode, EmptyLatent, ImageToVideo, AudioReference]
