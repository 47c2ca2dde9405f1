"""Decoders: video latent -> IMAGE frames (Turbo-VAED), audio latent -> AUDIO at 44.1 kHz.

The native Wan2.2 VAE Decode also works on our video latent. Audio must go through HappyHorse
Decode Audio: the model's audio latents run at 25 frames/s, i.e. the Stable Audio VAE output is
51.2 kHz audio (MODEL_SPEC §7.3), re-timed here to 44.1 kHz so that CreateVideo at 25 fps and
SaveVideo give an mp4 whose sound and picture last the same.
"""
from __future__ import annotations

import torch
from comfy_api.latest import io

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
        from happyhorse_core.sampling.latents import video_to_model

        from . import comfy_bridge as cb
        from .runtime import oom_advice
        video = cb.latent_samples(video_latent, "video")
        decoder = turbo_vaed["decoder"]
        cb.load_models([turbo_vaed["patcher"]])
        device = cb.torch_device()  # a partial load may leave some convs in RAM: they are fetched per call
        bar = cb.ComfyProgress(1, node_id=cls.hidden.unique_id)
        images = []
        with oom_advice("HappyHorse Decode Video"), torch.no_grad():
            for b in range(video.shape[0]):
                z = video_to_model(video[b:b + 1]).to(device)
                out = decoder.decode(z, progress=lambda d, t: bar(d, t), interrupt=cb.interrupt_check,
                                     output_device=cb.intermediate_device(), device=device)
                frames = (out.float() * 0.5 + 0.5).clamp(0, 1)  # [1, 3, T', H, W]
                images.append(cb.frames_to_image(frames))
        return io.NodeOutput(torch.cat(images).to(cb.intermediate_device()))


class DecodeAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseDecodeAudio",
            display_name="HappyHorse Decode Audio",
            category=f"{CATEGORY}/decode",
            description=("Decodes the audio latent with the native Stable Audio Open VAE and re-times it from the "
                         "model's 51.2 kHz (25 latent frames/s x 2048) to 44.1 kHz, so audio and video both last "
                         "(25*s+1)/25 s. Use this instead of the native VAE Decode Audio for HappyHorse latents."),
            inputs=[
                io.Latent.Input("audio_latent"),
                io.Vae.Input("vae", tooltip="The Stable Audio Open VAE (VAE Loader)."),
            ],
            outputs=[io.Audio.Output(display_name="audio")],
        )

    @classmethod
    def execute(cls, audio_latent, vae) -> io.NodeOutput:
        from happyhorse_core.media.audio import to_output_rate

        from . import comfy_bridge as cb
        samples = cb.latent_samples(audio_latent, "audio")
        wave = vae.decode(samples).movedim(-1, 1).float()  # [B, C, 2048 * F] at a nominal 51.2 kHz
        if wave.ndim != 3:
            raise ValueError(f"the VAE decoded to shape {list(wave.shape)}; connect the Stable Audio Open VAE")
        wave = to_output_rate(wave.cpu(), dim=-1)  # FFT re-timing 441/512 -> 44.1 kHz
        return io.NodeOutput({"waveform": wave.contiguous(), "sample_rate": 44100})


NODES = [DecodeVideo, DecodeAudio]
