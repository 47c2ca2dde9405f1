"""Turbo-VAED decoder architecture as plain data (the Wan2.2 latent statistics live in geometry.py).

The released decoder ships a diffusers-style JSON (`TurboV3-Wan22-TinyShallow_7_7.json`) whose
keys are the reference `TurboVAED(**config)` arguments, mixed with training-only fields
(feature-alignment projections, `_class_name`, ...). `TurboVAEDConfig.from_json` keeps the
fields the decoder needs and drops the rest, so the JSON can ship with the pack unchanged.
Lists are given in the reference order (narrow -> wide); the decoder walks them reversed.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..geometry import VIDEO_LATENT_CHANNELS, WAN22_LATENT_MEAN, WAN22_LATENT_STD  # noqa: F401 (re-exported)

log = logging.getLogger("HappyHorse.turbo_vaed")

# JSON key -> dataclass field, for the keys that carry decoder structure.
_JSON_FIELDS = {
    "latent_channels": "latent_channels",
    "out_channels": "out_channels",
    "decoder_block_out_channels": "block_out_channels",
    "decoder_layers_per_block": "layers_per_block",
    "decoder_spatio_temporal_scaling": "spatio_temporal_scaling",
    "decoder_spatio_only": "spatio_only",
    "patch_size": "patch_size",
    "first_chunk_size": "first_chunk_size",
    "step_size": "step_size",
    "spatial_compression_ratio": "spatial_compression_ratio",
    "temporal_compression_ratio": "temporal_compression_ratio",
    "resnet_norm_eps": "resnet_norm_eps",
}
# JSON keys whose value must equal what this port implements (the released decoder's value).
_JSON_REQUIRED_VALUES = {"patch_size_t": 1, "use_unpatchify": True, "decoder_causal": False}
# Keys the reference accepts but that do not change decoding (in_channels: encoder side only,
# scaling_factor: stored but never applied by decode, dw kernel: only used by dw convs).
_JSON_IGNORED = {"in_channels", "scaling_factor", "decoder_dw_kernel_size"}
# Training-only / bookkeeping keys known to appear in the released JSON.
_JSON_TRAINING_PREFIXES = ("_", "aligned_feature_projection", "aligned_blks_indices")


@dataclass(frozen=True)
class TurboVAEDConfig:
    """Decoder structure; defaults are the released TurboV3-Wan22-TinyShallow_7_7 values."""

    latent_channels: int = VIDEO_LATENT_CHANNELS  # Wan2.2 latent z_dim
    out_channels: int = 3  # RGB
    block_out_channels: tuple[int, ...] = (64, 128, 256, 512)  # narrow -> wide (reversed in the decoder)
    layers_per_block: tuple[int, ...] = (2, 2, 2, 3, 3)  # last entry = mid block resnets
    spatio_temporal_scaling: tuple[bool, ...] = (False, True, True, True)  # block has an upsampler
    spatio_only: tuple[bool, ...] = (False, True, False, False)  # upsampler is space-only (2d)
    patch_size: int = 2  # conv_out emits out_channels*2*2, unpatchified to 2x2 pixels
    first_chunk_size: int = 7  # latent frames of the first sliding window
    step_size: int = 7  # latent frames per following window
    spatial_compression_ratio: int = 16  # pixels per latent cell (each axis)
    temporal_compression_ratio: int = 4  # pixel frames per latent frame (also the window overlap)
    resnet_norm_eps: float = 1e-6  # eps of the shortcut RMS norm (norm3)
    norm_eps: float = 1e-8  # eps of every other channel RMS norm (hard-coded in the reference)

    def __post_init__(self) -> None:
        for name in ("block_out_channels", "layers_per_block", "spatio_temporal_scaling", "spatio_only"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.latent_channels != len(WAN22_LATENT_MEAN):
            raise ValueError(
                f"latent_channels must be {len(WAN22_LATENT_MEAN)} (Wan2.2 latent, de-normalised with its "
                f"per-channel mean/std), got {self.latent_channels}"
            )
        n = len(self.block_out_channels)
        if n == 0 or any(c <= 0 for c in self.block_out_channels):
            raise ValueError(f"block_out_channels must be positive channel counts, got {self.block_out_channels}")
        if len(self.layers_per_block) != n + 1:
            raise ValueError(
                f"layers_per_block needs {n + 1} entries (one per block plus the mid block), "
                f"got {len(self.layers_per_block)}: {self.layers_per_block}"
            )
        for name in ("spatio_temporal_scaling", "spatio_only"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} needs {n} entries (one per block), got {getattr(self, name)}")
        if self.patch_size != 2:
            raise ValueError(f"patch_size must be 2 (the reference decoder asserts it), got {self.patch_size}")
        if self.first_chunk_size < 1 or self.step_size < 1:
            raise ValueError(
                f"first_chunk_size and step_size must be >= 1, got {self.first_chunk_size}, {self.step_size}"
            )
        if self.temporal_compression_ratio != 2 ** self.num_time_upsamplers:
            raise ValueError(
                f"temporal_compression_ratio {self.temporal_compression_ratio} does not match the structure: "
                f"{self.num_time_upsamplers} time upsamplers give {2 ** self.num_time_upsamplers}"
            )
        expect_spatial = self.patch_size * 2 ** sum(self.spatio_temporal_scaling)
        if self.spatial_compression_ratio != expect_spatial:
            raise ValueError(
                f"spatial_compression_ratio {self.spatial_compression_ratio} does not match the structure: "
                f"{sum(self.spatio_temporal_scaling)} upsamplers x patch {self.patch_size} give {expect_spatial}"
            )

    @property
    def num_time_upsamplers(self) -> int:
        return sum(s and not o for s, o in zip(self.spatio_temporal_scaling, self.spatio_only))

    @classmethod
    def tiny(cls) -> "TurboVAEDConfig":
        """The tiny test structure of golden `turbo_vaed_case1` (same block pattern, few channels)."""
        return cls(block_out_channels=(8, 16, 24, 32), layers_per_block=(1, 1, 1, 1, 2))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "config") -> "TurboVAEDConfig":
        """Build from reference `TurboVAED(**config)` keys; training-only keys are dropped."""
        kwargs: dict[str, Any] = {}
        unknown = []
        for key, value in raw.items():
            if key in _JSON_FIELDS:
                kwargs[_JSON_FIELDS[key]] = value
            elif key in _JSON_REQUIRED_VALUES:
                if value != _JSON_REQUIRED_VALUES[key]:
                    raise ValueError(
                        f"{source}: {key}={value!r} is not supported; the released Turbo-VAED decoder uses "
                        f"{_JSON_REQUIRED_VALUES[key]!r}"
                    )
            elif key == "decoder_is_dw_conv":
                if any(value):
                    raise ValueError(
                        f"{source}: depthwise-separable convs (decoder_is_dw_conv={value}) are not supported; "
                        "the released Turbo-VAED decoder uses plain convs (all false)"
                    )
            elif key in _JSON_IGNORED or key.startswith(_JSON_TRAINING_PREFIXES):
                continue
            else:
                unknown.append(key)
        if unknown:
            log.warning("HappyHorse: %s: ignoring unknown Turbo-VAED config keys %s", source, sorted(unknown))
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "TurboVAEDConfig":
        """Read the official `TurboV3-Wan22-TinyShallow_7_7.json` (or any reference-style JSON)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"Turbo-VAED config not found: {path} (expected TurboV3-Wan22-TinyShallow_7_7.json)"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"{path} must hold a JSON object of TurboVAED arguments, got {type(raw).__name__}")
        return cls.from_dict(raw, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Reference-style keys (inverse of from_dict for the structural fields)."""
        own = dataclasses.asdict(self)
        out: dict[str, Any] = {key: own[field] for key, field in _JSON_FIELDS.items()}
        out.update(_JSON_REQUIRED_VALUES)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
