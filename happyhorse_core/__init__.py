"""HappyHorse core: the daVinci-MagiHuman joint video+audio model in pure PyTorch.

Nothing in this package imports ComfyUI (`comfy`, `folder_paths`, `server`, `comfy_api`);
hosts pass progress, interrupt and VAE hooks in as plain callables.

Module map (docs/ARCHITECTURE.md has every module and the data flow):
  geometry.py    clip sizes, durations and THE latent constants
  validation.py  host-boundary checks (latents, start image, dialogue, SR sizes)
  errors.py      CheckpointError (weight files); user input raises ValueError
  dit/           the sandwich DiT (config, ops, fp8, attention, rope, layers, block, model, offload ...)
  sampling/      the denoising loop, schedules, guidance, noise, super-resolution, latent spaces
  weights/       safetensors reading and checks, published layouts, variants, the DiT loader
  text/          prompt format, tokenizer, T5Gemma encoder and its loader
  decoders/      Turbo-VAED
  media/         audio timing, reading inputs, writing mp4
  hosted/        the hosted HappyHorse 1.0 API client
  cli/           `python -m happyhorse_core.generate`
  tools/         converters (fp8, Turbo-VAED pickle, SAO VAE) and the parity command
  testing/       tiny random stand-ins (never used by the nodes or real-weight paths)

Small public API (imported on first use, so `import happyhorse_core.geometry` stays light):
`load_dit`, `load_text_stack`, `load_turbo_vaed`, `super_resolve`, `ClipGeometry`, `CheckpointError`
(the sampler is `sampling.pipeline.generate`: `happyhorse_core.generate` is the CLI entry module).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "load_dit": "weights.loading",
    "load_text_stack": "text.loading",
    "load_turbo_vaed": "decoders.turbo_loading",
    "super_resolve": "sampling.super_resolution",
    "ClipGeometry": "geometry",
    "CheckpointError": "errors",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
