"""Conditioning nodes: prompt encoding, empty latents, first-frame image and voice reference.

LATENTs hold RAW VAE-space values as everywhere in ComfyUI (the native Wan2.2 VAE Decode works on
our video latent). The Wan2.2 mean/std normalisation into model space happens in the sampler.
"""
from __future__ import annotations

import contextlib
import functools
import logging

import torch

from ..happyhorse_core.geometry import (ASPECTS, AUDIO_HOP, AUDIO_NOMINAL_RATE as NOMINAL_RATE, FPS, ClipGeometry,
                                        RESOLUTION_SHORT_SIDE, check_batch, video_frames_for_audio)
from ..happyhorse_core.media.audio import prepare_voice_track, voice_for_video
from ..happyhorse_core.media.read import center_crop_to_aspect
from ..happyhorse_core.media.shrink import shrink_early, shrink_factor
from ..happyhorse_core.text.bounds import check_unicode, truncation_message
from ..happyhorse_core.text.encoder import encode_prompt
from ..happyhorse_core.text.prompts import build_prompt, DEFAULT_NEGATIVE_PROMPT, LANGUAGES, negative_or_default
from ..happyhorse_core.validation import parse_dialogue, start_image

from . import comfy_bridge as cb, comfy_layouts as layouts, ram_plan
from .comfy_bridge import io
from .node_warnings import collect, warn_all
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
                                tooltip="Used by base-model CFG (and SR CFG); ignored by the distilled model. "
                                        "Empty = the built-in default list (the same as the CLI's)."),
                io.Boolean.Input("raw", default=False, optional=True,
                                 tooltip="The prompt is already a complete enhanced prompt (with its Dialogue: and "
                                         "Background Sound: paragraphs): use it exactly as written. line, "
                                         "more_dialogue and background_sound must then be empty."),
            ],
            outputs=[HHConditioning.Output(display_name="conditioning")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, text_encoder, prompt, speaker, language, line, more_dialogue, background_sound,
                negative_prompt, raw=False) -> io.NodeOutput:
        node_id = cls.hidden.unique_id
        notes: list[str] = []
        full = build_prompt(prompt, parse_dialogue(speaker, language, line, more_dialogue, warn=notes.append),
                            background_sound, raw=bool(raw))
        negative = negative_or_default(negative_prompt)  # empty = the default list, as in the CLI
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
                io.Float.Input("seconds", default=5.0, min=1.0, max=15.0, step=0.04, round=0.01,
                               tooltip="Clip length at 25 fps (1-15 s, fractions allowed): 5 s = 126 frames (125 "
                                       "decoded). With a voice connected below: the most the voice may fill."),
                io.Int.Input("batch_size", default=1, min=1, max=16, tooltip="Clips sampled one after another."),
                io.Audio.Input("voice", optional=True,
                               tooltip="Optional voice track: the clip takes its length from it, as the reference "
                                       "does (a 4.0 s voice gives 97 frames; a longer one is cut to seconds). "
                                       "Connect the same AUDIO to HappyHorse Voice Reference."),
            ],
            outputs=[io.Latent.Output(display_name="video_latent"), io.Latent.Output(display_name="audio_latent")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, aspect, resolution, width, height, seconds, batch_size, voice=None) -> io.NodeOutput:
        with collect(cls.hidden.unique_id) as note:  # "size rounded" and "voice cut" reach the node
            if resolution == "custom":
                geo = ClipGeometry.from_request(width, height, seconds)
            else:
                geo = ClipGeometry.from_preset(aspect, resolution, seconds)
            if voice is not None:
                wave, rate = layouts.audio_to_waveform(voice)
                geo = geo.with_voice(wave.shape[-1], rate)
                voice_s = wave.shape[-1] / rate
                if voice_s - geo.frames / FPS >= 1 / FPS:
                    note(f"the voice track lasts {voice_s:.2f} s; the clip is cut to {geo.frames / FPS:.2f} s "
                         f"(raise seconds to use more of it)")
        check_batch(batch_size, geo)
        dev = cb.intermediate_device()
        video = torch.zeros((batch_size, *geo.video_latent_shape[1:]), device=dev)
        audio = torch.zeros((batch_size, 64, geo.audio_frames), device=dev)
        return io.NodeOutput(layouts.video_latent(video), layouts.audio_latent(audio))


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
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, image, vae, video_latent) -> io.NodeOutput:
        video = layouts.latent_samples(video_latent, "video")
        with collect(cls.hidden.unique_id):  # "image batch" reaches the node
            latent = encode_start_frame(image, vae, video.shape[3], video.shape[4])
        return io.NodeOutput(layouts.video_latent(latent.to(cb.intermediate_device())))


def encode_start_frame(image, vae, latent_h: int, latent_w: int) -> torch.Tensor:
    """IMAGE -> raw Wan2.2 first-frame latent [1, 48, 1, latent_h, latent_w]: centre-crop to the aspect, lanczos
    resize to 16x the latent size, native VAE encode (ImageBatchWarning for a batch: the first image is used).
    Image To Video and Super-Resolution (at the SR size) both encode through here."""
    h, w = latent_h * 16, latent_w * 16
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
    return latent[:, :, :1].float()


class AudioReference(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseAudioReference",
            display_name="HappyHorse Voice Reference",
            category=f"{CATEGORY}/conditioning",
            description=("Encodes a voice track (any sample rate 8-192 kHz, mono/stereo/5.1/7.1) with the native "
                         "Stable Audio VAE into the audio latent that drives the lips. As in the reference it is "
                         "downmixed to mono (on both VAE channels), resampled to the model's 51.2 kHz timing (25 "
                         "latent frames/s) and fitted to the clip; only the part the clip uses is processed. Also "
                         "outputs the original recording cut to the clip's video length, for the mp4."),
            inputs=[
                io.Audio.Input("audio", tooltip="The voice track (Load Audio)."),
                io.Vae.Input("vae", tooltip="The Stable Audio Open VAE (64 latent channels)."),
                io.Latent.Input("audio_latent", tooltip="The clip's audio latent (for the length). Give HappyHorse "
                                                        "Empty Latent the same voice so the clip matches it."),
                io.Boolean.Input("vae_fp32", default=True, optional=True,
                                 tooltip="Encode in fp32 as the reference does (ComfyUI may load the VAE in "
                                         "fp16/bf16). Off: the VAE's loaded precision."),
            ],
            outputs=[io.Latent.Output(display_name="voice_latent"),
                     io.Audio.Output(display_name="voice_for_video")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, audio, vae, audio_latent, vae_fp32=True) -> io.NodeOutput:
        frames = layouts.latent_samples(audio_latent, "audio").shape[2]
        wave, rate = layouts.audio_to_waveform(audio)
        cb.interrupt_check()
        with collect(cls.hidden.unique_id) as note:
            prep = prepare_voice_track(wave, rate, NOMINAL_RATE, frames * AUDIO_HOP)  # only the clip's share
            clip_s = frames / FPS
            if prep.source_duration_s - clip_s >= 1 / FPS:
                note(f"the voice track ({prep.source_duration_s:.2f} s) is longer than the clip ({clip_s:.2f} s); "
                     "the end is cut. Connect the voice to HappyHorse Empty Latent (and raise seconds) to use it all")
            if prep.padded:
                note(f"the voice track ({prep.source_duration_s:.2f} s) is shorter than the clip ({clip_s:.2f} s); "
                     "padded with silence. Connect the voice to HappyHorse Empty Latent so the clip is as long as "
                     "the voice")
            if prep.silent:
                note("the voice track is silent (peak below -60 dBFS)")
        cb.interrupt_check()
        with cb.vae_dtype(vae, torch.float32 if vae_fp32 else None):
            latent = vae.encode(prep.waveform.unsqueeze(0).movedim(1, -1))  # [1, 64, F']
        if latent.ndim != 3 or latent.shape[1] != 64:
            raise ValueError(f"the VAE gave a latent of shape {list(latent.shape)}; connect the Stable Audio "
                             "Open VAE (64 channels)")
        latent = latent.float()[:, :, :frames]
        if latent.shape[2] < frames:
            latent = torch.nn.functional.pad(latent, (0, frames - latent.shape[2]))
        original = voice_for_video(wave, rate, video_frames_for_audio(frames))  # [C, n] at the track's rate
        return io.NodeOutput(layouts.audio_latent(latent.to(cb.intermediate_device())),
                             layouts.waveform_to_audio(original, rate))


NODES = [TextEncode, EmptyLatent, ImageToVideo, AudioReference]
