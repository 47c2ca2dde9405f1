"""Strict loading of Turbo-VAED weights from `.safetensors` (memory-mapped) or the released `.ckpt`.

The reference loads the pickle checkpoint with strict=False, so a wrong file "loads" with random
weights. Here every key and shape must match the module built from the config (given, or inferred
from the tensor shapes), through the checks all weight loaders share (weights/checks.py: keys and
shapes, floating dtypes, a sampled NaN/Inf check). `turbo_vae/checkpoint-340000.ckpt` loads as it is
through turbo_ckpt (torch.load(weights_only=True), as ComfyUI does for .ckpt); with `cache=True` a
decoder-only `.safetensors` copy is written next to it once and read from then on. The explicit
converter (`python -m happyhorse_core.tools.convert_ckpt`) writes that file anywhere.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import torch

from ..errors import CheckpointError
from ..paths import broken_link_message
from ..weights.checks import assign_tensor, check_dtypes, check_keys_and_shapes, check_sampled_finite
from ..weights.safetensors_header import TORCH_TO_ST, TensorInfo
from ..weights.safetensors_io import CheckpointIndex, open_checkpoint, write_safetensors
from .turbo_ckpt import PICKLE_SUFFIXES, read_decoder_checkpoint
from .turbo_config import TurboVAEDConfig
from .turbo_key_map import canonical_key_map
from .turbo_vaed import TurboVAED

log = logging.getLogger("HappyHorse.turbo_vaed")

LEGACY_SUFFIXES = PICKLE_SUFFIXES
Shapes = Mapping[str, Sequence[int]]


def _indices(shapes: Shapes, prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for key in shapes if (m := pattern.match(key))})


def _shape(shapes: Shapes, key: str) -> Sequence[int]:
    if key not in shapes:
        raise ValueError(f"cannot infer the Turbo-VAED structure: tensor {key!r} is missing")
    return shapes[key]


def infer_config(shapes: Shapes) -> TurboVAEDConfig:
    """Rebuild the decoder structure from `decoder.*` tensor shapes (chunking/eps keep their defaults)."""
    latent_channels = _shape(shapes, "decoder.conv_in.conv.weight")[1]
    mid_layers = len(_indices(shapes, "decoder.mid_block.resnets."))
    block_ids = _indices(shapes, "decoder.up_blocks.")
    if not block_ids or block_ids != list(range(len(block_ids))):
        raise ValueError(f"cannot infer the Turbo-VAED structure: up_blocks indices are {block_ids}")
    width = _shape(shapes, "decoder.conv_in.conv.weight")[0]
    widths, layers, scaling, space_only = [], [], [], []
    for i in block_ids:
        base = f"decoder.up_blocks.{i}."
        if f"{base}conv_in.conv1.conv.weight" in shapes:
            width = shapes[f"{base}conv_in.conv1.conv.weight"][0]
        has_up = f"{base}upsamplers.0.resample.1.weight" in shapes
        widths.append(width)
        layers.append(len(_indices(shapes, f"{base}resnets.")))
        scaling.append(has_up)
        space_only.append(has_up and f"{base}upsamplers.0.time_conv.conv.weight" not in shapes)
    patch = 2
    out_channels = _shape(shapes, "decoder.conv_out.conv.weight")[0] // (patch * patch)
    n_time = sum(s and not o for s, o in zip(scaling, space_only))
    return TurboVAEDConfig(
        latent_channels=latent_channels,
        out_channels=out_channels,
        block_out_channels=tuple(reversed(widths)),
        layers_per_block=tuple(reversed([mid_layers] + layers)),
        spatio_temporal_scaling=tuple(reversed(scaling)),
        spatio_only=tuple(reversed(space_only)),
        patch_size=patch,
        spatial_compression_ratio=patch * 2 ** sum(scaling),
        temporal_compression_ratio=2**n_time,
    )


def _open(path: Path) -> CheckpointIndex:
    """The file's header, after the shared safetensors checks (no tensor data is read)."""
    try:
        return open_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"Turbo-VAED weights: not a readable .safetensors file. {exc}") from None


def _check_path(path: Path) -> None:
    if not path.is_file():
        broken = broken_link_message(path)
        if broken:
            raise FileNotFoundError(f"Turbo-VAED weights: {broken}")
        raise FileNotFoundError(
            f"Turbo-VAED weights not found: {path} (expected turbo_vae/checkpoint-340000.ckpt from "
            "GAIR/daVinci-MagiHuman, or a .safetensors file converted from it)"
        )
    if path.suffix.lower() not in (".safetensors", *LEGACY_SUFFIXES):
        raise CheckpointError(f"{path}: expected a .safetensors or .ckpt file, got suffix {path.suffix!r}")


class _PickleIndex(CheckpointIndex):
    """The decoder tensors read from a pickle, behind the CheckpointIndex interface (read = same checks)."""

    def __init__(self, path: Path, tensors: dict[str, torch.Tensor]):
        entries = {k: TensorInfo(path, TORCH_TO_ST.get(t.dtype, str(t.dtype)), tuple(t.shape)) for k, t in tensors.items()}
        super().__init__(path, "pickle checkpoint (torch.load weights_only)", entries)
        self.tensors = tensors

    def read(self, key: str) -> torch.Tensor:
        tensor = self.tensors[key]
        check_sampled_finite(tensor, key, self.root)
        return tensor


def cached_copy(path: Path) -> Path:
    """Where cache=True keeps the decoder-only safetensors copy of a pickle checkpoint."""
    return path.with_name(path.stem + ".decoder.safetensors")


def _open_pickle(path: Path, cache: bool) -> CheckpointIndex:
    """The .ckpt's decoder tensors; with cache, the safetensors copy beside it (written on first use)."""
    copy = cached_copy(path)
    if cache and copy.is_file() and copy.stat().st_mtime >= path.stat().st_mtime:
        return _open(copy)
    tensors, _ = read_decoder_checkpoint(path)
    if cache:
        try:
            write_safetensors(copy, tensors, {"format": "pt", "source": path.name,
                                              "converter": "happyhorse_core.decoders.turbo_loading"})
            log.info("HappyHorse: cached %s as %s", path.name, copy.name)
            return _open(copy)
        except OSError as exc:  # read-only model folder: keep going from memory
            log.warning("HappyHorse: could not write the Turbo-VAED cache %s (%s); loading from the .ckpt", copy, exc)
    return _PickleIndex(path, tensors)


def load_turbo_vaed(
    path: Union[str, os.PathLike],
    *,
    config: Union[TurboVAEDConfig, str, os.PathLike, None] = None,
    dtype: torch.dtype = torch.bfloat16,
    device: Union[torch.device, str] = "cpu",
    cache: bool = False,
    interrupt: Optional[Callable[[], None]] = None,
) -> TurboVAED:
    """Build the decoder and load `path` strictly (keys and shapes), cast to `dtype` on `device`.

    `path`: a .safetensors file (memory-mapped) or the released .ckpt (torch.load(weights_only=True);
    `cache=True` writes `<stem>.decoder.safetensors` beside it on first use and reads that afterwards).
    `config`: a TurboVAEDConfig, a path to the reference JSON, or None to infer the structure from
    the tensor shapes. Keys may carry `module.` and/or `decoder.` prefixes. `interrupt` (raises to
    stop, e.g. ComfyUI's Cancel) is called before every tensor read.
    """
    path = Path(path)
    _check_path(path)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype such as torch.bfloat16, got {dtype}")
    if config is not None and not isinstance(config, TurboVAEDConfig):
        config = TurboVAEDConfig.from_json(config)
    ckpt = _open_pickle(path, cache) if path.suffix.lower() in LEGACY_SUFFIXES else _open(path)
    key_map = canonical_key_map(ckpt.keys())
    shapes = {key_map[name]: info.shape for name, info in ckpt.entries.items()}
    if config is None:
        try:
            config = infer_config(shapes)
        except ValueError as exc:
            log.warning("HappyHorse: %s: %s; checking against the released structure", path, exc)
            config = TurboVAEDConfig()
    with torch.device("meta"):
        model = TurboVAED(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_keys_and_shapes(expected, shapes, source=path, what=f"the Turbo-VAED decoder ({config})",
                          hint="Use the Turbo-VAED decoder weights (turbo_vae/ folder of the release), or pass the "
                               "matching config JSON.")
    check_dtypes({name: info.dtype for name, info in ckpt.entries.items()}, path, "Turbo-VAED")
    log.info(
        "HappyHorse: Turbo-VAED %s: %d tensors, %s structure",
        path.name,
        len(shapes),
        "released TurboV3" if config == TurboVAEDConfig() else "non-default",
    )
    for name, key in key_map.items():
        if interrupt is not None:
            interrupt()
        assign_tensor(model, key, ckpt.read(name).to(device=device, dtype=dtype))
    model.source = str(path)
    return model.eval().requires_grad_(False)
