"""Seeded Gaussian noise drawn in the reference order (MODEL_SPEC §4.7).

The reference draws every tensor from one global RNG in a fixed order:
initial audio [1, F, 64] (skipped when reference audio is given), then initial video
[1, 48, T, h, w]; for the distilled sampler one video then one audio tensor per step; for the
SR stage one tensor shaped like the upsampled video latent, then one like the base audio
latent. Here the caller passes a `torch.Generator` instead of a global RNG; drawing through
these helpers in pipeline order keeps that sequence, and handing the same generator (or its saved
state, :func:`generator_state` / :func:`restore_generator`) from the base stage to the SR stage
continues one stream as the reference does. All noise is fp32 on the generator's device.

Noise device: the default is a CPU generator, so a seed gives the same clip on any machine. The
reference draws on CUDA (`torch.manual_seed(seed)` then `torch.randn(..., device="cuda")`); a CUDA
generator seeded with the same value (`make_generator(seed, "cuda")`, the nodes' `noise_device =
gpu`) walks the same Philox stream (seed, offset 0, the same offset increments per draw), so a
seed reproduces the reference's t2v / i2v clip on the same GPU model. [UNVERIFIED: no GPU run in
this tree yet.] With a voice track the reference's audio VAE also samples its posterior from that
stream before the video noise; ComfyUI's VAE does not, so voice-driven clips do not reproduce it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..geometry import AUDIO_LATENT_CHANNELS, VIDEO_LATENT_CHANNELS

SEED_LIMIT = 2**64  # torch seeds and ComfyUI's seed widget: 0 .. 2**64 - 1


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed` (reference default seed: 42)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


def batch_seed(seed: int, index: int) -> int:
    """Seed of clip `index` in a batch: seed + index, wrapping past the widget maximum 2**64 - 1 to 0."""
    return (int(seed) + int(index)) % SEED_LIMIT


def generator_state(generator: torch.Generator) -> dict:
    """Where a generator stands: {"device": "cpu" | "cuda:N", "state": uint8 tensor on the CPU}."""
    return {"device": str(generator.device), "state": generator.get_state().clone()}


def restore_generator(saved: dict) -> torch.Generator:
    """A generator that continues exactly where :func:`generator_state` left off."""
    if not isinstance(saved, dict) or "device" not in saved or "state" not in saved:
        raise ValueError("a saved noise stream must be {'device', 'state'} from generator_state()")
    gen = torch.Generator(device=saved["device"])
    gen.set_state(saved["state"])
    return gen


def randn(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Standard normal fp32 tensor of `shape` on the generator's device."""
    if any(int(s) < 1 for s in shape):
        raise ValueError(f"noise shape must have positive sizes, got {tuple(shape)}")
    return torch.randn(tuple(int(s) for s in shape), generator=generator, dtype=torch.float32,
                       device=generator.device)


def initial_noise(generator: torch.Generator, audio_frames: int, latent_frames: int, latent_h: int,
                  latent_w: int, draw_audio: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Starting latents: audio [1, F, 64] first (unless `draw_audio` is False, i.e. reference
    audio is supplied), then video [1, 48, T, h, w]. Returns (audio or None, video)."""
    audio = randn((1, audio_frames, AUDIO_LATENT_CHANNELS), generator) if draw_audio else None
    video = randn((1, VIDEO_LATENT_CHANNELS, latent_frames, latent_h, latent_w), generator)
    return audio, video


def distill_step_noise(generator: torch.Generator, video_shape: Sequence[int],
                       audio_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh noise for one distilled (step_ddim) step: video first, then audio.

    The reference draws both on every step, the last one included, and even for audio that
    came from a reference clip."""
    video = randn(video_shape, generator)
    audio = randn(audio_shape, generator)
    return video, audio


def sr_noise(generator: torch.Generator, video_up_shape: Sequence[int],
             audio_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """SR-stage noise: one tensor shaped like the upsampled video latent (for the VP re-noise),
    then one shaped like the base audio latent (for the 0.7/0.3 audio context)."""
    video = randn(video_up_shape, generator)
    audio = randn(audio_shape, generator)
    return video, audio
