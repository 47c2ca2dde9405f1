"""Load T5Gemma encoder weights from safetensors without touching the decoder.

Accepted layouts (WEIGHT_LAYOUTS §2):
  * an HF folder: `config.json`, tokenizer files, and either `model.safetensors.index.json` with
    shards or one `model.safetensors` (or exactly one other `*.safetensors`). Keys `model.encoder.*`
    (official encoder-decoder repo) or `encoder.*` (a saved `T5GemmaEncoderModel`). Shards that
    hold only decoder tensors are neither required nor opened.
  * an encoder-only single file with keys prefixed `model.encoder.`, `encoder.` or nothing (18.5 GB in
    bf16 instead of the 37 GB two-half folder; tools/extract_t5gemma_encoder writes one). Its tokenizer
    and config.json sit beside it or in one folder next to it (e.g. the repo folder without its
    shards): tokenizer_folder_for() says which.
Files are opened and checked by the shared weights code (weights/safetensors_io.py,
weights/checks.py): strict keys and shapes, floating dtypes, a sampled NaN/Inf check; every
tensor is read one at a time from memory-mapped files into a module built on the meta device.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import CheckpointError
from ..paths import broken_link_message
from ..weights.checks import assign_tensor, check_dtypes, check_keys_and_shapes
from ..weights.safetensors_header import refuse_unsafe_suffix
from ..weights.safetensors_io import CheckpointIndex, open_checkpoint
from .encoder import T5GemmaEncoder, T5GemmaEncoderConfig
from .tokenizer import HUB_REPO, TOKENIZER_FILES, T5GemmaTokenizer, find_tokenizer_file, load_tokenizer

ENCODER_PREFIXES = ("model.encoder.", "encoder.")  # tried in this order
DOWNLOAD_HINT = f"Download the .safetensors files of the hub repo {HUB_REPO} into that folder."
# Storage options: (dtype of embedding, norms and activations, fp8 dtype of the layer linears or None, scaled)
WEIGHT_DTYPES = {"bf16": (torch.bfloat16, None, False), "fp32": (torch.float32, None, False),
                 "fp8_e4m3fn": (torch.bfloat16, torch.float8_e4m3fn, False),
                 "fp8_e4m3fn_scaled": (torch.bfloat16, torch.float8_e4m3fn, True)}
_FP8_LINEAR_SUFFIXES = ("_proj.weight",)  # q/k/v/o and gate/up/down projections of every layer


def _is_encoder_key(key: str) -> bool:
    return key.startswith(ENCODER_PREFIXES)


def select_encoder(keys: list[str], source: Path, allow_bare: bool) -> dict[str, str]:
    """Module key -> file key. Picks the first prefix that matches any key (the loader and
    tools/extract_t5gemma_encoder both use this, so an extracted file holds what the loader reads)."""
    for prefix in ENCODER_PREFIXES:
        if any(k.startswith(prefix) for k in keys):
            return {k[len(prefix):]: k for k in keys if k.startswith(prefix)}
    if allow_bare:
        return {k: k for k in keys}
    raise CheckpointError(f"{source}: no encoder tensors found (expected keys starting with "
                          f"{' or '.join(ENCODER_PREFIXES)}; first keys seen: {sorted(keys)[:10]}). "
                          f"Use the weights of {HUB_REPO}.")


def _read_config(folder: Path) -> tuple[T5GemmaEncoderConfig, str]:
    """(config, where its sizes came from) for the weights in `folder`."""
    path = folder / "config.json"
    if not path.is_file():  # the 9B defaults; shapes are still checked strictly
        return T5GemmaEncoderConfig(), f"the 9B default sizes (no config.json in {folder})"
    try:
        return T5GemmaEncoderConfig.from_hf_config(json.loads(path.read_text(encoding="utf-8"))), str(path)
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: {exc}") from None


def tokenizer_folder_for(path: str | Path) -> Path:
    """Where the tokenizer (and config.json) of an encoder-only file are: its own folder when it holds tokenizer
    files, else the one folder beside the file that does. FileNotFoundError naming what to do otherwise."""
    path = Path(path)
    if path.is_dir() or any((path.parent / n).is_file() for n in TOKENIZER_FILES):
        return path if path.is_dir() else path.parent
    near = sorted(d for d in path.parent.iterdir() if d.is_dir() and any((d / n).is_file() for n in TOKENIZER_FILES))
    if len(near) == 1:
        return near[0]
    found = f" (found several: {', '.join(d.name for d in near)})" if near else ""
    raise FileNotFoundError(
        f"no tokenizer for {path.name}: put {' or '.join(TOKENIZER_FILES)} (with tokenizer_config.json and "
        f"config.json from {HUB_REPO}) beside it, or keep exactly one folder with them next to it{found}")


def _config_folder(path: Path) -> Path:
    """config.json of an encoder-only file: beside it, else in its tokenizer folder (else the 9B defaults)."""
    if (path.parent / "config.json").is_file():
        return path.parent
    try:
        return tokenizer_folder_for(path)
    except FileNotFoundError:
        return path.parent  # no config.json: the 9B default sizes, shapes still checked strictly


def load_encoder(path: str | Path, *, dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu",
                 config: T5GemmaEncoderConfig | None = None, require_tokenizer: bool = True,
                 weight_dtype: str | None = None, interrupt: Optional[Callable[[], None]] = None) -> T5GemmaEncoder:
    """Build the encoder from an HF folder or an encoder-only safetensors file.

    weight_dtype: one of WEIGHT_DTYPES ("bf16", "fp32", "fp8_e4m3fn", "fp8_e4m3fn_scaled"); overrides
      `dtype`. fp8 stores the layer linears in fp8, quantized tensor by tensor while reading (upcast
      to bf16 per matmul; ~10.2 GB instead of 18.5 GB for the 9B encoder); embedding and norms bf16.
    config: overrides the folder's config.json (a single file has none; default = 9B sizes).
    require_tokenizer: for folders, fail early when the tokenizer files are absent.
    interrupt: raises to stop (ComfyUI's Cancel); called before every tensor read.
    """
    path = Path(path)
    fp8, scaled = None, False
    if weight_dtype is not None:
        if weight_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"text encoder weight_dtype must be one of {sorted(WEIGHT_DTYPES)}, got {weight_dtype!r}")
        dtype, fp8, scaled = WEIGHT_DTYPES[weight_dtype]
    if path.is_dir():
        if require_tokenizer:
            find_tokenizer_file(path)
        cfg, sizes_from = (config, "the config passed in") if config else _read_config(path)
        ckpt = open_checkpoint(path, (), wanted=_is_encoder_key, hint=DOWNLOAD_HINT)
    elif path.is_file():
        refuse_unsafe_suffix(path)
        cfg, sizes_from = (config, "the config passed in") if config else _read_config(_config_folder(path))
        ckpt = open_checkpoint(path)
    else:
        broken = broken_link_message(path)
        if broken:
            raise FileNotFoundError(f"the T5Gemma encoder path {broken}")
        raise FileNotFoundError(f"T5Gemma encoder path {path} does not exist; point it at the folder of "
                                f"{HUB_REPO} or an encoder-only .safetensors file")
    selected = select_encoder(ckpt.keys(), path, allow_bare=path.is_file())
    with torch.device("meta"):
        model = T5GemmaEncoder(cfg)
    _check(model, ckpt, selected, path, sizes_from)
    for name, key in selected.items():
        if interrupt is not None:
            interrupt()
        if fp8 is not None and name.endswith(_FP8_LINEAR_SUFFIXES):
            _assign_fp8(model, name, ckpt.read(key), fp8, scaled, device)
        else:
            assign_tensor(model, name, ckpt.read(key).to(device=device, dtype=dtype))
    return model.eval()


def _assign_fp8(model: T5GemmaEncoder, name: str, tensor: torch.Tensor, fp8: torch.dtype, scaled: bool,
                device: torch.device | str) -> None:
    """Quantize one linear weight to fp8 (with a per-tensor `weight_scale` buffer when scaled) and place it."""
    from ..dit.fp8 import quantize
    q, scale = quantize(tensor, fp8, scaled)
    if scale is not None:  # the encoder's linears have no scale slot: this adds one
        model.get_submodule(name.rpartition(".")[0]).register_buffer("weight_scale", scale.to(device))
    assign_tensor(model, name, q.to(device))


def _check(model: T5GemmaEncoder, ckpt: CheckpointIndex, selected: dict[str, str], source: Path,
           sizes_from: str) -> None:
    """Keys and shapes against the module built from `sizes_from`, then dtypes (headers only)."""
    quanto = any(k.endswith(("._data", "._scale")) for k in selected)
    hint = ("This looks like an optimum-quanto quantized file, which is not supported: use a bf16 file. "
            if quanto else "")
    check_keys_and_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()},
                          {k: ckpt.entries[f].shape for k, f in selected.items()}, source=source,
                          what=f"the T5Gemma encoder built from {sizes_from}",
                          hint=f"{hint}Use the encoder of {HUB_REPO}, with the config.json that came with the weights.")
    check_dtypes({f: ckpt.entries[f].dtype for f in selected.values()}, source, "T5Gemma encoder")


def load_text_stack(folder: str | Path, *, dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu",
                    config: T5GemmaEncoderConfig | None = None, weight_dtype: str | None = None,
                    interrupt: Optional[Callable[[], None]] = None) -> tuple[T5GemmaEncoder, T5GemmaTokenizer]:
    """Encoder + tokenizer from one HF folder, or from an encoder file and its tokenizer folder
    (tokenizer_folder_for: beside the file, or the one folder next to it that has one).

    The tokenizer is loaded first, so a folder without one fails before any weight is read.
    """
    folder = Path(folder)
    if folder.is_file():
        refuse_unsafe_suffix(folder)  # a pickle is named as such, not reported as a missing tokenizer
    tokenizer = load_tokenizer(tokenizer_folder_for(folder) if folder.is_file() else folder)
    encoder = load_encoder(folder, dtype=dtype, device=device, config=config, require_tokenizer=False,
                           weight_dtype=weight_dtype, interrupt=interrupt)
    return encoder, tokenizer
