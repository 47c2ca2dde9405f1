"""Nodes that put HappyHorse on ComfyUI's core sampling graph (MODEL, LATENT, GUIDER, SIGMAS, SAMPLER, NOISE).

Graph: HappyHorse Model Loader -> HappyHorse To MODEL -> (LoraLoaderModelOnly / HappyHorse LoRA
Loader, ModelSamplingSD3, any MODEL node) -> HappyHorse Guider + HappyHorse Sigmas ->
SamplerCustomAdvanced (with HappyHorse Native Sampler and HappyHorse Noise) -> HappyHorse Split
AV Latent -> decoders. The one-node HappyHorse Sampler stays the easy path; for the same seed
both give the same latents.
"""
from __future__ import annotations

import torch

from ..happyhorse_core.validation import check_clip_latents

from . import comfy_bridge as cb, comfy_layouts as layouts
from .comfy_bridge import io
from .native_lora import apply_lora, read_lora_file
from .native_model import is_happyhorse, require_happyhorse
from .native_sampling import HHNoise, hh_sigmas, make_guider, make_sampler, model_shift, nested, part_mask
from .types import CATEGORY, HHConditioning, HHModel

NATIVE = f"{CATEGORY}/native"


class ToModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseToModel",
            display_name="HappyHorse To MODEL",
            category=NATIVE,
            description=("The loaded HappyHorse DiT as a ComfyUI MODEL (flow sampling, shift 5), for core nodes: "
                         "LoraLoaderModelOnly, ModelSamplingSD3, SamplerCustomAdvanced, EasyCache, "
                         "TorchCompileModel. It is the same model object as the easy path's, not a copy."),
            inputs=[HHModel.Input("model")],
            outputs=[io.Model.Output(display_name="MODEL")],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        if model.block_swap:
            raise ValueError("HappyHorse To MODEL: remove the HappyHorse Block Swap input of the model loader; on "
                             "the native path ComfyUI's own offloading (--lowvram / --novram) places the weights")
        if not is_happyhorse(model.patcher):
            raise ValueError("HappyHorse To MODEL: this model was loaded without its native patcher; reload it with "
                             "HappyHorse Model Loader")
        if model.variant.startswith("sr_"):
            raise ValueError("HappyHorse To MODEL: the super-resolution checkpoint runs in HappyHorse "
                             "Super-Resolution; load the distill or base checkpoint here")
        return io.NodeOutput(model.patcher)


class ConditioningSplit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseConditioningSplit",
            display_name="HappyHorse Conditioning Split",
            category=NATIVE,
            description="HappyHorse Text Encode output as core CONDITIONING: positive and negative [1, tokens, 3584].",
            inputs=[HHConditioning.Input("conditioning")],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, conditioning) -> io.NodeOutput:
        def cond(rows):
            return [[rows.float().unsqueeze(0), {}]] if rows is not None else []
        return io.NodeOutput(cond(conditioning.positive), cond(conditioning.negative))


class PackAVLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorsePackAVLatent",
            display_name="HappyHorse Pack AV Latent",
            category=NATIVE,
            description=("Joins the video and audio LATENTs into one nested LATENT [video, audio] for "
                         "SamplerCustomAdvanced. A first-frame latent is written into latent frame 0 and kept clean "
                         "(noise mask 0 there); a voice latent replaces the audio and is kept fixed (the distilled "
                         "HappyHorse sampler re-noises it each step, as the reference does)."),
            inputs=[
                io.Latent.Input("video_latent", tooltip="From HappyHorse Empty Latent: [B, 48, T, h, w]."),
                io.Latent.Input("audio_latent", tooltip="From HappyHorse Empty Latent: [B, 64, F]."),
                io.Latent.Input("first_frame", optional=True, tooltip="From HappyHorse Image To Video."),
                io.Latent.Input("voice_latent", optional=True, tooltip="From HappyHorse Voice Reference."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, video_latent, audio_latent, first_frame=None, voice_latent=None) -> io.NodeOutput:
        video = layouts.latent_samples(video_latent, "video").float().clone()
        audio = layouts.latent_samples(audio_latent, "audio").float().clone()
        check_clip_latents(video, audio)
        b, _, t, h, w = video.shape
        v_mask = _part_mask(video_latent, (b, 1, t, h, w))
        a_mask = _part_mask(audio_latent, (b, 1, audio.shape[2]))
        if first_frame is not None:
            image = layouts.latent_samples(first_frame, "video")[:1].float()
            if tuple(image.shape[2:]) != (1, h, w):
                raise ValueError(f"first_frame latent is {list(image.shape)} but the video latent is "
                                 f"{list(video.shape)}: "
                                 "encode the start image at the clip's width and height")
            video[:, :, :1] = image.to(video.device)
            v_mask[:, :, :1] = 0.0
        if voice_latent is not None:
            voice = layouts.latent_samples(voice_latent, "audio")[:1].float()
            if voice.shape[2] != audio.shape[2]:
                raise ValueError(f"voice latent has {voice.shape[2]} frames but the clip needs {audio.shape[2]}: make "
                                 "the voice latent with HappyHorse Voice Reference at the clip's length")
            audio[:] = voice.to(audio.device)
            a_mask[:] = 0.0
        out = {"samples": nested([video, audio])}
        if first_frame is not None or voice_latent is not None or "noise_mask" in video_latent \
                or "noise_mask" in audio_latent:
            out["noise_mask"] = nested([v_mask, a_mask])
        return io.NodeOutput(out)


def _part_mask(latent: dict, shape: tuple) -> torch.Tensor:
    """The part's own noise mask at `shape` ([B, 1, ...]) or ones."""
    mask = latent.get("noise_mask")
    return torch.ones(shape) if mask is None else part_mask(mask, shape)


class SplitAVLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseSplitAVLatent",
            display_name="HappyHorse Split AV Latent",
            category=NATIVE,
            description=("Splits the nested [video, audio] LATENT from SamplerCustomAdvanced back into the video "
                         "LATENT (Wan2.2 VAE Decode / Turbo-VAED) and the audio LATENT (Stable Audio VAE)."),
            inputs=[io.Latent.Input("latent", tooltip="The 'output' of SamplerCustomAdvanced.")],
            outputs=[io.Latent.Output(display_name="video_latent"), io.Latent.Output(display_name="audio_latent")],
        )

    @classmethod
    def execute(cls, latent) -> io.NodeOutput:
        samples = latent.get("samples") if isinstance(latent, dict) else None
        if not getattr(samples, "is_nested", False) or len(samples.unbind()) != 2:
            raise ValueError("HappyHorse Split AV Latent needs the joint [video, audio] LATENT ('output' of "
                             "SamplerCustomAdvanced, not 'denoised_output', which ComfyUI 0.3.75 keeps packed)")
        video, audio = samples.unbind()
        return io.NodeOutput(layouts.video_latent(video), layouts.audio_latent(audio))


class Guider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseGuider",
            display_name="HappyHorse Guider",
            category=NATIVE,
            description=("GUIDER with the model's split guidance, mixed on velocities like the HappyHorse Sampler: "
                         "video video_cfg while the timestep (trunc(1000*sigma)) is above switch_timestep, then "
                         "video_cfg_late; audio audio_cfg. Base model: 5.0 / 2.0 / 5.0 at 500. Distilled model: "
                         "all three 1.0 (one conditional pass per step, no negative needed)."),
            inputs=[
                io.Model.Input("model"),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative", optional=True),
                io.Float.Input("video_cfg", default=5.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Video guidance while timestep > switch_timestep (base: 5.0)."),
                io.Float.Input("video_cfg_late", default=2.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Video guidance once timestep <= switch_timestep (base: 2.0)."),
                io.Float.Input("audio_cfg", default=5.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Audio guidance, every step (base: 5.0)."),
                io.Int.Input("switch_timestep", default=500, min=0, max=1000,
                             tooltip="Integer timestep (0-999) where video guidance switches to video_cfg_late."),
            ],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model, positive, video_cfg, video_cfg_late, audio_cfg, switch_timestep,
                negative=None) -> io.NodeOutput:
        require_happyhorse(model, "HappyHorse Guider")
        guider = make_guider(model)
        guider.set_cfg(video_cfg, video_cfg_late, audio_cfg, switch_timestep)
        if guider.uses_cfg and not negative:
            raise ValueError("HappyHorse Guider: CFG scales other than 1.0 need the negative conditioning; connect "
                             "'negative' from HappyHorse Conditioning Split, or set all scales to 1.0 (distilled)")
        guider.inner_set_conds({"positive": positive, **({"negative": negative} if negative else {})})
        return io.NodeOutput(guider)


class Sigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseSigmas",
            display_name="HappyHorse Sigmas",
            category=NATIVE,
            description=("The HappyHorse schedule: sigmas from 0.999 to 0 in equal steps, shifted by the MODEL's "
                         "flow shift (5.0; ModelSamplingSD3 changes it), then 0. distilled = 8 steps, base = 32, "
                         "sr = 5 (the super-resolution model's schedule)."),
            inputs=[
                io.Model.Input("model"),
                io.Combo.Input("schedule", options=["distilled", "base", "sr"], default="distilled"),
                io.Int.Input("steps", default=0, min=0, max=200, tooltip="0 = the schedule's default (8 / 32 / 5)."),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, schedule, steps) -> io.NodeOutput:
        return io.NodeOutput(hh_sigmas(schedule, steps, model_shift(model)))


class NativeSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseNativeSampler",
            display_name="HappyHorse Native Sampler",
            category=NATIVE,
            description=("SAMPLER with HappyHorse's update rules. distilled: x0 re-noised to the next sigma with "
                         "fresh noise each step (pack noise order); base: flow UniPC (bh2, order 2). Starts from the "
                         "noise unscaled and keeps the first frame / fixed voice clean, like the HappyHorse Sampler."),
            inputs=[io.Combo.Input("mode", options=["distilled", "base"], default="distilled")],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, mode) -> io.NodeOutput:
        return io.NodeOutput(make_sampler(mode))


class Noise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseNoise",
            display_name="HappyHorse Noise",
            category=NATIVE,
            description=("NOISE drawn like the HappyHorse Sampler (one CPU stream per clip, seed + batch index; "
                         "audio first unless a voice is given, then video), so the same seed gives the same clip "
                         "on both paths."),
            inputs=[io.Int.Input("noise_seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True)],
            outputs=[io.Noise.Output()],
        )

    @classmethod
    def execute(cls, noise_seed) -> io.NodeOutput:
        return io.NodeOutput(HHNoise(noise_seed))


class LoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseLoraLoader",
            display_name="HappyHorse LoRA Loader",
            category=NATIVE,
            description=("Adds a LoRA from models/loras to the HappyHorse MODEL. Reads what core LoraLoaderModelOnly "
                         "reads (PEFT lora_A/lora_B with a diffusion_model. prefix, kohya lora_up/lora_down/alpha) "
                         "plus PEFT keys without the prefix and per-expert keys (<layer>.<proj>.video/audio/text) "
                         "that patch only that expert's rows of a sandwich layer. A file that matches no weight "
                         "is an error."),
            inputs=[
                io.Model.Input("model"),
                io.Combo.Input("lora_name", options=cb.list_loras() or ["no files found"],
                               tooltip="A .safetensors LoRA in models/loras."),
                io.Float.Input("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="Multiplies the LoRA's update (1.0 = as trained; 0 = off)."),
            ],
            outputs=[io.Model.Output(display_name="MODEL")],
        )

    @classmethod
    def execute(cls, model, lora_name, strength_model) -> io.NodeOutput:
        if strength_model == 0:
            return io.NodeOutput(model)
        path = cb.model_path("loras", lora_name)
        lora = read_lora_file(path)
        return io.NodeOutput(apply_lora(model, lora, strength_model, lora_name))


NODES = [ToModel, LoraLoader, ConditioningSplit, PackAVLatent, SplitAVLatent, Guider, Sigmas, NativeSampler, Noise]
