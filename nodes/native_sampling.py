"""GUIDER, SAMPLER, NOISE and SIGMAS objects that run HappyHorse on SamplerCustomAdvanced.

Together they reproduce the pack's sampler (happyhorse_core.sampling.pipeline.generate) bit for
bit in fp32 (COMFYUI_NATIVE.md §4):
  * HHGuider mixes CFG on VELOCITIES per modality, v = v_u + s·(v_c − v_u) (video s while
    trunc(1000·σ) > switch, then s_late; audio s_audio), and returns x0 = x − σ·v. With every
    scale at 1.0 it runs the conditional pass only (distilled model). It still goes through
    calc_cond_batch, so hooks, EasyCache and other wrappers run; `sampler_cfg_function` and
    pre-CFG hooks are bypassed (post-CFG hooks run on x0).
  * HHSampler starts from the NOISE as is (no σ0 scaling: the pack starts from ε at σ0 = 0.9998)
    and keeps masked parts (first frame, fixed voice) clean. distilled = the re-noising step
    x' = σ'·ε + (1 − σ')·x0 with fresh noise per step; base = flow UniPC (bh2, order 2). Core
    `lcm` computes the same update, but draws its per-step noise on the latent's device from a
    different stream and scales the start by σ0, so it cannot reproduce the pack's clip.
  * Per-step noise replays the pack's single CPU stream: a generator seeded with seed + row (batch_seed)
    draws the initial audio (unless a voice latent is given) and video noise, then video and
    audio noise per step.
  * HHNoise draws that initial state as a nested [video, audio] LATENT-layout noise.
"""
from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import torch

from ..happyhorse_core.sampling.guidance import apply_cfg
from ..happyhorse_core.sampling.noise import batch_seed, distill_step_noise, initial_noise, make_generator
from ..happyhorse_core.sampling.scheduler import FlowUniPC, flow_sigmas

from .native_model import RETURN_VELOCITY, check_shapes, join_packed, split_packed

SAMPLER_MODES = ("distilled", "base")
SCHEDULES = {"distilled": 8, "base": 32, "sr": 5}  # default steps per schedule


# ----------------------------------------------------------------------------- SIGMAS
def hh_sigmas(schedule: str, steps: int, shift: float) -> torch.Tensor:
    """[steps + 1] fp32 CPU sigmas of the pack's schedule: linspace(0.999, 0) shifted, then 0."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
    return flow_sigmas(int(steps) or SCHEDULES[schedule], float(shift))[0]


def model_shift(patcher) -> float:
    """The shift of the MODEL's flow sampling (5.0, or what ModelSamplingSD3 set)."""
    sampling = patcher.get_model_object("model_sampling")
    shift = getattr(sampling, "shift", None)
    if shift is None:
        raise ValueError("this MODEL has no flow shift (not a flow model): connect the HappyHorse MODEL, optionally "
                         "through ModelSamplingSD3")
    return float(shift)


# ----------------------------------------------------------------------------- GUIDER
def video_scale_at(sigma: float, scale: float, scale_late: float, switch: int) -> float:
    """Video CFG scale at σ: the pack compares its integer timestep trunc(1000·σ) with the switch."""
    return scale if int(float(sigma) * 1000) > switch else scale_late


def pack_mask(mask, latent_image) -> torch.Tensor:
    """Nested per-part noise masks -> one packed [B, 1, N] mask (None parts = ones, i.e. denoised)."""
    import comfy.utils
    parts = latent_image.unbind()
    masks = mask.unbind()
    if len(masks) != len(parts):
        raise ValueError(f"the noise mask has {len(masks)} parts but the latent has {len(parts)}: rebuild both with "
                         "'HappyHorse Pack AV Latent'")
    out = []
    for m, p in zip(masks, parts):
        m = torch.ones_like(p[:, :1]) if m is None else m
        out.append(comfy.utils.reshape_mask(m.float(), p.shape).reshape(p.shape[0], 1, -1))
    return torch.cat(out, dim=-1)


# ----------------------------------------------------------------------------- NOISE
def _voice_rows(audio: torch.Tensor) -> list[bool]:
    """A row carries a voice latent when its audio part is nonzero (empty latents are zeros)."""
    return [bool(torch.count_nonzero(audio[b])) for b in range(audio.shape[0])]


class HHNoise:
    """The pack's initial state per row (seed + row): audio ε [1, F, 64] unless a voice is given
    (then the voice latent itself), then video ε [1, 48, T, h, w]; returned nested in LATENT layout."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def generate_noise(self, input_latent: dict):
        samples = input_latent["samples"]
        if not getattr(samples, "is_nested", False):
            raise ValueError("HappyHorse Noise needs the joint latent of 'HappyHorse Pack AV Latent'")
        video, audio = samples.unbind()
        check_shapes([video.shape, audio.shape])
        _, _, t, h, w = video.shape
        frames = audio.shape[2]
        vids, auds = [], []
        for b, voice in enumerate(_voice_rows(audio)):
            a, v = initial_noise(make_generator(batch_seed(self.seed, b)), frames, t, h, w, draw_audio=not voice)
            vids.append(v)
            auds.append(audio[b:b + 1].float().cpu() if voice else a.transpose(1, 2).contiguous())
        return nested([torch.cat(vids), torch.cat(auds)])


def nested(parts: list):
    """ComfyUI's NestedTensor of [video, audio] (a LATENT's joint `samples`)."""
    import comfy.nested_tensor
    return comfy.nested_tensor.NestedTensor(parts)


def part_mask(mask: torch.Tensor, shape: tuple) -> torch.Tensor:
    """A LATENT noise mask resized to one part's mask shape [B, 1, ...] (ComfyUI's reshape_mask)."""
    import comfy.utils
    return comfy.utils.reshape_mask(mask.float(), shape).clone()


# ----------------------------------------------------------------------------- GUIDER and SAMPLER classes
@functools.cache
def comfy_classes() -> SimpleNamespace:
    """HHGuider (a CFGGuider) and HHSampler (a Sampler), defined on first use (comfy imported here only)."""
    import comfy.model_patcher
    import comfy.samplers

    class HHGuider(comfy.samplers.CFGGuider):
        """CFGGuider with the pack's split, velocity-space guidance (see the module docstring)."""

        def __init__(self, model_patcher) -> None:
            super().__init__(model_patcher)
            self.set_cfg(5.0, 2.0, 5.0, 500)

        def set_cfg(self, video_cfg, video_cfg_late=2.0, audio_cfg=5.0, switch=500) -> None:
            self.video_cfg, self.video_cfg_late = float(video_cfg), float(video_cfg_late)
            self.audio_cfg = float(audio_cfg)
            self.switch = int(switch)
            self.cfg = max(self.video_cfg, self.video_cfg_late, self.audio_cfg)  # other code reads .cfg

        @property
        def uses_cfg(self) -> bool:
            return not (self.video_cfg == self.video_cfg_late == self.audio_cfg == 1.0)

        def predict_noise(self, x, timestep, model_options={}, seed=None):
            model = self.inner_model
            opts = comfy.model_patcher.create_model_options_clone(model_options)
            opts["transformer_options"] = {**opts.get("transformer_options", {}), RETURN_VELOCITY: True}
            positive, negative = self.conds.get("positive"), self.conds.get("negative")
            if self.uses_cfg and negative is None:
                raise ValueError("CFG scales other than 1.0 need a negative prompt: connect 'negative' of HappyHorse "
                                 "Guider (or set all three scales to 1.0 for the distilled model)")
            conds = [positive, negative] if self.uses_cfg else [positive]
            outs = comfy.samplers.calc_cond_batch(model, conds, x, timestep, opts)
            sigma = timestep.reshape(-1, *([1] * (x.ndim - 1)))  # [B, 1, 1]
            v_cond = outs[0]
            if self.uses_cfg:
                v_uncond = outs[1]
                nv = math.prod(check_shapes(model.latent_shapes)[0][1:])
                vs = video_scale_at(timestep[0], self.video_cfg, self.video_cfg_late, self.switch)
                v = torch.cat([apply_cfg(v_cond[..., :nv], v_uncond[..., :nv], vs),
                               apply_cfg(v_cond[..., nv:], v_uncond[..., nv:], self.audio_cfg)], dim=-1)
            else:
                v_uncond, v = v_cond, v_cond
            x0 = x - sigma * v
            for fn in model_options.get("sampler_post_cfg_function", []):
                x0 = fn({"denoised": x0, "cond": positive, "uncond": negative, "model": model,
                         "uncond_denoised": x - sigma * v_uncond, "cond_denoised": x - sigma * v_cond,
                         "sigma": timestep, "model_options": model_options, "input": x})
            return x0

        def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
                   seed=None):
            if denoise_mask is not None and getattr(denoise_mask, "is_nested", False):
                denoise_mask = pack_mask(denoise_mask, latent_image)
            return super().sample(noise, latent_image, sampler, sigmas, denoise_mask=denoise_mask, callback=callback,
                                  disable_pbar=disable_pbar, seed=seed)

    class HHSampler(comfy.samplers.Sampler):
        """The pack's update rules on the packed joint latent (see the module docstring)."""

        def __init__(self, mode: str) -> None:
            if mode not in SAMPLER_MODES:
                raise ValueError(f"HappyHorse sampler mode must be one of {SAMPLER_MODES}, got {mode!r}")
            self.mode = mode

        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            model = model_wrap.inner_model
            shapes = check_shapes(model.latent_shapes)
            seed = extra_args.get("seed")
            if seed is None:
                raise ValueError("HappyHorse Sampler needs a seeded NOISE (HappyHorse Noise or RandomNoise)")
            sig = sigmas.detach().to("cpu", torch.float32).clone()  # never mutate the SIGMAS input
            steps = sig.numel() - 1
            latent = latent_image if latent_image is not None else torch.zeros_like(noise)
            mask = self._mask(denoise_mask, latent, shapes)
            x = noise.clone() if mask is None else noise * mask + latent * (1 - mask)
            gens = self._replayed_generators(int(seed), latent, shapes)
            solver = FlowUniPC.from_sigmas(sig) if self.mode == "base" else None
            s_in = x.new_ones([x.shape[0]])
            for i in range(steps):
                if mask is not None:
                    x = x * mask + latent * (1 - mask)
                x0 = model_wrap(x, sig[i].to(x.device) * s_in, **extra_args)
                if mask is not None:
                    x0 = x0 * mask + latent * (1 - mask)
                if callback is not None:
                    callback(i, x0, x, steps)
                if self.mode == "distilled":
                    eps = self._step_noise(gens, shapes).to(x.device)
                    x = sig[i + 1] * eps + (1 - sig[i + 1]) * x0
                else:
                    x = solver.step_x0(x0, i, x)
            if mask is not None:
                x = x * mask + latent * (1 - mask)
            return x

        def _mask(self, denoise_mask, latent: torch.Tensor, shapes) -> torch.Tensor | None:
            """The packed 0/1 mask; distilled frees a voice row's audio (the reference re-noises the voice)."""
            if self.mode != "distilled":
                return denoise_mask
            _, audio = split_packed(latent, shapes)
            voice = _voice_rows(audio)
            if not any(voice):
                return denoise_mask
            mask = torch.ones_like(latent) if denoise_mask is None else denoise_mask.clone()
            nv = math.prod(shapes[0][1:])
            for b, v in enumerate(voice):
                if v:
                    mask[b, :, nv:] = 1.0
            return mask

        @staticmethod
        def _replayed_generators(seed: int, latent: torch.Tensor, shapes) -> list[torch.Generator]:
            """One CPU generator per row (seed + row), advanced past the initial noise draws."""
            video_shape, audio_shape = shapes
            _, audio = split_packed(latent, shapes)
            gens = []
            for b, voice in enumerate(_voice_rows(audio)):
                g = make_generator(batch_seed(seed, b))
                initial_noise(g, audio_shape[2], *video_shape[2:], draw_audio=not voice)
                gens.append(g)
            return gens

        @staticmethod
        def _step_noise(gens: list[torch.Generator], shapes) -> torch.Tensor:
            """Per-step noise, video then audio per row, packed [B, 1, N] (audio drawn [1, F, 64])."""
            video_shape, audio_shape = shapes
            rows = []
            for g in gens:
                v, a = distill_step_noise(g, (1, *video_shape[1:]), (1, audio_shape[2], audio_shape[1]))
                rows.append(join_packed(v, a.transpose(1, 2)))
            return torch.cat(rows)

    return SimpleNamespace(HHGuider=HHGuider, HHSampler=HHSampler)


def make_guider(model_patcher):
    return comfy_classes().HHGuider(model_patcher)


def make_sampler(mode: str):
    return comfy_classes().HHSampler(mode)
