"""Decoders: video latent -> IMAGE frames (Turbo-VAED), audio latent -> AUDIO at 44.1 kHz.

The native Wan2.2 VAE Decode also works on our video latent. Audio must go through HappyHorse
Decode Audio: the model's audio latents run at 25 frames/s, i.e. the Stable Audio VAE output is
51.2 kHz audio (MODEL_SPEC §7.3), re-timed here to 44.1 kHz so that CreateVideo at 25 fps and
SaveVideo give an mp4 whose sound and picture last the same. Each clip's waveform is cut to its
video's length (4(T-1)+1 frames at 25 fps) so that a batch joined into one file stays in sync.
"""
from __future__ import annotations

import torch

from ..happyhorse_core.errors import CheckpointError
from ..happyhorse_core.media.audio import output_audio
from ..happyhorse_core.sampling.latents import video_to_model

from . import comfy_bridge as cb, comfy_layouts as layouts
from .comfy_bridge import io
from .runtime import oom_advice
from .types import CATEGORY, HHTurboVAED


class DecodeVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseDecodeVideo",
            display_name="HappyHorse Decode Video (Turbo-VAED)",
            category=f"{CATEGORY}/decode",
            description=("Decodes a video latent with the fast Turbo-VAED decoder in 7-latent-frame windows "
                         "(each window goes to system RAM as it finishes): T latent frames -> 4(T-1)+1 frames, "
                         "16x the latent size. Output is a native IMAGE batch for CreateVideo or any upscaler."),
            inputs=[
                HHTurboVAED.Input("turbo_vaed"),
                io.Latent.Input("video_latent"),
            ],
            outputs=[io.Image.Output(display_name="images")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, turbo_vaed, video_latent) -> io.NodeOutput:
        video = layouts.latent_samples(video_latent, "video")
        decoder = turbo_vaed.decoder
        device = cb.torch_device()  # a partial load may leave some convs in RAM: they are fetched per call
        bar = cb.ComfyProgress(1, node_id=cls.hidden.unique_id)
        images = []
        with oom_advice("HappyHorse Decode Video"), torch.no_grad():
            cb.load_models([turbo_vaed.patcher])
            for b in range(video.shape[0]):
                cb.interrupt_check()
                z = video_to_model(video[b:b + 1]).to(device)
                out = decoder.decode(z, progress=lambda d, t: bar(d, t), interrupt=cb.interrupt_check,
                                     output_device=cb.intermediate_device(), device=device)
                frames = (out.float() * 0.5 + 0.5).clamp(0, 1)  # [1, 3, T', H, W]
                images.append(layouts.frames_to_image(frames))
        return io.NodeOutput(torch.cat(images).to(cb.intermediate_device()))


class DecodeAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseDecodeAudio",
            display_name="HappyHorse Decode Audio",
            category=f"{CATEGORY}/decode",
            description=("Decodes the audio latent with the native Stable Audio Open VAE and re-times it from the "
                         "model's 51.2 kHz (25 latent frames/s x 2048) to 44.1 kHz; each clip's sound is cut to "
                         "its picture (4T-3 frames at 25 fps), so a batch joined into one file stays in sync and "
                         "the length equals the CLI's. Use this instead of the native VAE Decode Audio for "
                         "HappyHorse latents."),
            inputs=[
                io.Latent.Input("audio_latent"),
                io.Vae.Input("vae", tooltip="The Stable Audio Open VAE (VAE Loader)."),
                io.Boolean.Input("vae_fp32", default=True, optional=True,
                                 tooltip="Decode in fp32 as the reference does (ComfyUI may load the VAE in "
                                         "fp16/bf16). Off: the VAE's loaded precision."),
            ],
            outputs=[io.Audio.Output(display_name="audio")],
        )

    @classmethod
    def execute(cls, audio_latent, vae, vae_fp32=True) -> io.NodeOutput:
        samples = layouts.latent_samples(audio_latent, "audio")  # [B, 64, F]
        if not bool(torch.isfinite(samples).all()):
            raise ValueError("the audio latent contains NaN/Inf values; check the node that produced it")
        cb.interrupt_check()
        with cb.vae_dtype(vae, torch.float32 if vae_fp32 else None):
            wave = vae.decode(samples).movedim(-1, 1).float()  # [B, C, 2048 * F] at a nominal 51.2 kHz
        if wave.ndim != 3:
            raise ValueError(f"the VAE decoded to shape {list(wave.shape)}; connect the Stable Audio Open VAE")
        if not bool(torch.isfinite(wave).all()):  # never a "successful" silent or broken track
            raise CheckpointError("the VAE decoded NaN/Inf audio from a finite latent: its weights are damaged or "
                                  "it is not the Stable Audio Open VAE; load the Stable Audio Open VAE file again")
        cb.interrupt_check()
        # FFT re-timing 441/512 -> 44.1 kHz, each clip cut to its video (4(T-1)+1 frames): the CLI's rule too
        wave = output_audio(wave.cpu(), samples.shape[2])
        return io.NodeOutput({"waveform": wave, "sample_rate": 44100})


NODES = [DecodeVideo, DecodeAudio]
