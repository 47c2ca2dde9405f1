"""Random-weight VAE files that ComfyUI 0.3.75's own VAELoader detects as the Wan2.2 VAE and the
Stable Audio Open (Oobleck) VAE, for integration tests that run native VAE nodes.

Only torch + safetensors (the tests' venv has no ComfyUI); the state-dict layouts below are written out
from the architectures in ComfyUI's `comfy/ldm/wan/vae2_2.py` and `comfy/ldm/audio/autoencoder.py`.

Why these files are not "tiny": `comfy.sd.VAE` picks the architecture by key and then builds it with
HARD-CODED widths -- Wan2.2: `WanVAE(dim=160, dec_dim=256 (default), z_dim=48, dim_mult=[1,2,4,4],
num_res_blocks=2)`; Stable Audio: `AudioOobleckVAE()` defaults (channels=128, c_mults=[1,2,4,8,16],
latent_dim=64). No width is read from tensor shapes, a shape mismatch is an error, and a missing key
leaves the weight uninitialised (`comfy.ops.disable_weight_init` -> torch.empty, i.e. garbage). So the
smallest file that loads and runs deterministically has every parameter of the full model
(Wan2.2: 704,688,668; SAO: 156,112,514). We store them as float8_e5m2 (1 byte each; `load_state_dict`
copies them into ComfyUI's float32 modules), which gives ~705 MB and ~156 MB. `cached_vae_files()`
writes them once per machine under .cache/tiny_native/ and tests link them into their models/ tree.

Detection keys (comfy/sd.py VAE.__init__):
  Wan2.2: "decoder.middle.0.residual.0.gamma" and "decoder.upsamples.0.upsamples.0.residual.2.weight"
  SAO:    "decoder.layers.1.layers.0.beta"
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator

import torch

from ..weights.safetensors_io import write_safetensors

SEED = 20251127
STORE_DTYPE = torch.float8_e5m2        # 1 byte per parameter, wide exponent range for tiny conv weights
LAYOUT_VERSION = "1"                   # bump when a layout or init below changes (invalidates the cache)

Shape = tuple[int, ...]


# ----------------------------------------------------------------------------- Wan2.2 VAE layout
def _wan_resblock(prefix: str, cin: int, cout: int) -> Iterator[tuple[str, Shape]]:
    """ResidualBlock: RMS_norm, CausalConv3d 3x3x3, RMS_norm, CausalConv3d 3x3x3 (+1x1x1 shortcut)."""
    yield f"{prefix}.residual.0.gamma", (cin, 1, 1, 1)
    yield f"{prefix}.residual.2.weight", (cout, cin, 3, 3, 3)
    yield f"{prefix}.residual.2.bias", (cout,)
    yield f"{prefix}.residual.3.gamma", (cout, 1, 1, 1)
    yield f"{prefix}.residual.6.weight", (cout, cout, 3, 3, 3)
    yield f"{prefix}.residual.6.bias", (cout,)
    if cin != cout:
        yield f"{prefix}.shortcut.weight", (cout, cin, 1, 1, 1)
        yield f"{prefix}.shortcut.bias", (cout,)


def _wan_middle(prefix: str, c: int) -> Iterator[tuple[str, Shape]]:
    """ResidualBlock, AttentionBlock (RMS_norm + 1x1 qkv/proj Conv2d), ResidualBlock."""
    yield from _wan_resblock(f"{prefix}.middle.0", c, c)
    yield f"{prefix}.middle.1.norm.gamma", (c, 1, 1)
    yield f"{prefix}.middle.1.to_qkv.weight", (3 * c, c, 1, 1)
    yield f"{prefix}.middle.1.to_qkv.bias", (3 * c,)
    yield f"{prefix}.middle.1.proj.weight", (c, c, 1, 1)
    yield f"{prefix}.middle.1.proj.bias", (c,)
    yield from _wan_resblock(f"{prefix}.middle.2", c, c)


def wan22_vae_layout(dim: int = 160, dec_dim: int = 256, z_dim: int = 48,
                     dim_mult: tuple[int, ...] = (1, 2, 4, 4), num_res_blocks: int = 2,
                     temporal_down: tuple[bool, ...] = (False, True, True)) -> list[tuple[str, Shape]]:
    """(key, shape) of comfy.ldm.wan.vae2_2.WanVAE as comfy.sd.VAE builds it (patch size 2 -> 12 ch)."""
    out: list[tuple[str, Shape]] = []
    io_ch = 3 * 2 * 2                                   # RGB patchified 2x2
    enc = [dim * m for m in (1, *dim_mult)]             # [160, 160, 320, 640, 640]
    out += [("encoder.conv1.weight", (enc[0], io_ch, 3, 3, 3)), ("encoder.conv1.bias", (enc[0],))]
    for i, (cin, cout) in enumerate(zip(enc[:-1], enc[1:])):
        for j in range(num_res_blocks):
            out += _wan_resblock(f"encoder.downsamples.{i}.downsamples.{j}", cin if j == 0 else cout, cout)
        if i != len(dim_mult) - 1:
            p = f"encoder.downsamples.{i}.downsamples.{num_res_blocks}"
            out += [(f"{p}.resample.1.weight", (cout, cout, 3, 3)), (f"{p}.resample.1.bias", (cout,))]
            if temporal_down[i]:
                out += [(f"{p}.time_conv.weight", (cout, cout, 3, 1, 1)), (f"{p}.time_conv.bias", (cout,))]
    out += _wan_middle("encoder", enc[-1])
    out += [("encoder.head.0.gamma", (enc[-1], 1, 1, 1)),
            ("encoder.head.2.weight", (2 * z_dim, enc[-1], 3, 3, 3)), ("encoder.head.2.bias", (2 * z_dim,))]
    out += [("conv1.weight", (2 * z_dim, 2 * z_dim, 1, 1, 1)), ("conv1.bias", (2 * z_dim,)),
            ("conv2.weight", (z_dim, z_dim, 1, 1, 1)), ("conv2.bias", (z_dim,))]

    dec = [dec_dim * m for m in (dim_mult[-1], *dim_mult[::-1])]   # [1024, 1024, 1024, 512, 256]
    temporal_up = temporal_down[::-1]
    out += [("decoder.conv1.weight", (dec[0], z_dim, 3, 3, 3)), ("decoder.conv1.bias", (dec[0],))]
    out += _wan_middle("decoder", dec[0])
    for i, (cin, cout) in enumerate(zip(dec[:-1], dec[1:])):
        for j in range(num_res_blocks + 1):
            out += _wan_resblock(f"decoder.upsamples.{i}.upsamples.{j}", cin if j == 0 else cout, cout)
        if i != len(dim_mult) - 1:
            p = f"decoder.upsamples.{i}.upsamples.{num_res_blocks + 1}"
            out += [(f"{p}.resample.1.weight", (cout, cout, 3, 3)), (f"{p}.resample.1.bias", (cout,))]
            if temporal_up[i]:
                out += [(f"{p}.time_conv.weight", (2 * cout, cout, 3, 1, 1)), (f"{p}.time_conv.bias", (2 * cout,))]
    out += [("decoder.head.0.gamma", (dec[-1], 1, 1, 1)),
            ("decoder.head.2.weight", (io_ch, dec[-1], 3, 3, 3)), ("decoder.head.2.bias", (io_ch,))]
    return out


# ----------------------------------------------------------------------------- SAO (Oobleck) VAE layout
def _wn_conv(prefix: str, cout: int, cin: int, k: int, bias: bool = True,
             transposed: bool = False) -> Iterator[tuple[str, Shape]]:
    """Weight-normed Conv1d / ConvTranspose1d (torch parametrizations: original0 = g, original1 = v)."""
    if bias:
        yield f"{prefix}.bias", (cout,)
    if transposed:   # ConvTranspose1d weight is [in, out, k]; weight_norm dim 0 -> g is [in, 1, 1]
        yield f"{prefix}.parametrizations.weight.original0", (cin, 1, 1)
        yield f"{prefix}.parametrizations.weight.original1", (cin, cout, k)
    else:
        yield f"{prefix}.parametrizations.weight.original0", (cout, 1, 1)
        yield f"{prefix}.parametrizations.weight.original1", (cout, cin, k)


def _snake(prefix: str, c: int) -> Iterator[tuple[str, Shape]]:
    yield f"{prefix}.alpha", (c,)
    yield f"{prefix}.beta", (c,)


def _res_unit(prefix: str, c: int) -> Iterator[tuple[str, Shape]]:
    """ResidualUnit: snake, conv k7 (dilated), snake, conv k1."""
    yield from _snake(f"{prefix}.layers.0", c)
    yield from _wn_conv(f"{prefix}.layers.1", c, c, 7)
    yield from _snake(f"{prefix}.layers.2", c)
    yield from _wn_conv(f"{prefix}.layers.3", c, c, 1)


def sao_vae_layout(channels: int = 128, latent_dim: int = 64, audio_ch: int = 2,
                   c_mults: tuple[int, ...] = (1, 2, 4, 8, 16),
                   strides: tuple[int, ...] = (2, 4, 4, 8, 8)) -> list[tuple[str, Shape]]:
    """(key, shape) of comfy.ldm.audio.autoencoder.AudioOobleckVAE() (snake activations, no tanh)."""
    out: list[tuple[str, Shape]] = []
    ch = [channels * m for m in (1, *c_mults)]          # [128, 128, 256, 512, 1024, 2048]
    out += _wn_conv("encoder.layers.0", ch[0], audio_ch, 7)
    for i in range(len(c_mults)):                        # EncoderBlock: 3 res units, snake, strided conv
        p = f"encoder.layers.{i + 1}.layers"
        for u in range(3):
            out += _res_unit(f"{p}.{u}", ch[i])
        out += _snake(f"{p}.3", ch[i])
        out += _wn_conv(f"{p}.4", ch[i + 1], ch[i], 2 * strides[i])
    n = len(c_mults) + 1
    out += _snake(f"encoder.layers.{n}", ch[-1])
    out += _wn_conv(f"encoder.layers.{n + 1}", 2 * latent_dim, ch[-1], 3)

    out += _wn_conv("decoder.layers.0", ch[-1], latent_dim, 7)
    for k, i in enumerate(range(len(c_mults), 0, -1)):   # DecoderBlock: snake, transposed conv, 3 res units
        p = f"decoder.layers.{k + 1}.layers"
        out += _snake(f"{p}.0", ch[i])
        out += _wn_conv(f"{p}.1", ch[i - 1], ch[i], 2 * strides[i - 1], transposed=True)
        for u in range(3):
            out += _res_unit(f"{p}.{u + 2}", ch[i - 1])
    out += _snake(f"decoder.layers.{n}", ch[0])
    out += _wn_conv(f"decoder.layers.{n + 1}", audio_ch, ch[0], 7, bias=False)
    return out


# ----------------------------------------------------------------------------- random values + writers
def _init_value(key: str, shape: Shape, gen: torch.Generator) -> torch.Tensor:
    """Deterministic random tensor for one key; scaled so activations stay O(1) through the network."""
    name = key.rsplit(".", 1)[-1]
    noise = torch.randn(shape, generator=gen)
    if name in ("gamma", "original0"):                 # norm scales / weight-norm gains: around 1
        return 1.0 + 0.1 * noise
    if name in ("alpha", "beta"):                        # snake, log-scale parameters: around 0
        return 0.1 * noise
    if name == "bias":
        return 0.02 * noise
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return noise / math.sqrt(fan_in)


def _write(layout: list[tuple[str, Shape]], path: str | os.PathLike, seed: int, kind: str) -> Path:
    gen = torch.Generator().manual_seed(seed)
    sd = {k: _init_value(k, s, gen).to(STORE_DTYPE) for k, s in layout}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(path, sd, metadata={"happyhorse_test_fixture": kind, "seed": str(seed),
                                          "layout_version": LAYOUT_VERSION})
    return path


def write_tiny_wan22_vae(path: str | os.PathLike, seed: int = SEED) -> Path:
    """Random-weight Wan2.2 VAE (48-ch latents, 16x spatial / 4x temporal) in ComfyUI's key layout."""
    return _write(wan22_vae_layout(), path, seed, "wan22_vae_random")


def write_tiny_stable_audio_vae(path: str | os.PathLike, seed: int = SEED + 1) -> Path:
    """Random-weight Stable Audio Open Oobleck VAE (64-ch latents, 2048x, 44.1 kHz stereo)."""
    return _write(sao_vae_layout(), path, seed, "stable_audio_vae_random")


def cached_vae_files(cache_dir: str | os.PathLike) -> dict[str, Path]:
    """Write both files once into cache_dir (keyed by layout version + seed) and return their paths:
    {"wan22": ..., "stable_audio": ...}. Re-used across test sessions on the same machine."""
    cache = Path(cache_dir)
    files = {"wan22": cache / f"tiny_wan22_vae_v{LAYOUT_VERSION}_{SEED}.safetensors",
             "stable_audio": cache / f"tiny_sao_vae_v{LAYOUT_VERSION}_{SEED + 1}.safetensors"}
    if not files["wan22"].is_file():
        write_tiny_wan22_vae(files["wan22"])
    if not files["stable_audio"].is_file():
        write_tiny_stable_audio_vae(files["stable_audio"])
    return files
