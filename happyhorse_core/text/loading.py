"""Load T5Gemma encoder weights from safetensors without touching the decoder.

Accepted layouts (WEIGHT_LAYOUTS §2):
  * an HF folder: `config.json`, tokenizer files, and either `model.safetensors.index.json` with
    shards or one `model.safetensors` (or exactly one other `*.safetensors`). Keys `model.encoder.*`
    (official encoder-decoder repo) or `encoder.*` (a saved `T5GemmaEncoderModel`).
  * an encoder-only single file with keys prefixed `model.encoder.`, `encoder.` or nothing.
Only encoder tensors are read, one at a time from memory-mapped files, into a module built on the
meta device. Loading is strict: missing or unexpected encoder keys and wrong shapes are errors.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors import safe_open
from torch import nn

from ..paths import broken_link_message
from ..weights.safetensors_io import PICKLE_SUFFIXES, read_header
from .encoder import T5GemmaEncoder, T5GemmaEncoderConfig
from .tokenizer import T5GemmaTokenizer, find_tokenizer_file, load_tokenizer

ENCODER_PREFIXES = ("model.encoder.", "encoder.")  # tried in this order
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
HUB_REPO = "google/t5gemma-9b-9b-ul2"


def _names(keys: list[str], limit: int = 10) -> str:
    return ", ".join(keys[:limit]) + (" ..." if len(keys) > limit else "")


def _safetensors_keys(path: Path) -> list[str]:
    """Tensor names from the header, after read_header's checks (empty, truncated, pickle, git-lfs ...)."""
    entries, _ = read_header(path)
    return list(entries)


def _folder_weight_map(folder: Path) -> dict[str, Path]:
    """key -> file holding it, for every tensor in the folder's checkpoint (from headers only)."""
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise ValueError(f"{index} is not a valid safetensors index ({exc}); re-download it from {HUB_REPO}"
                             ) from None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no 'weight_map'; re-download it from {HUB_REPO}")
        return {k: folder / v for k, v in weight_map.items()}
    single = folder / SINGLE_NAME
    if not single.is_file():
        candidates = sorted(folder.glob("*.safetensors"))
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "none"
            pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
            hint = (f" ({', '.join(pickles[:3])}: pickle checkpoints, which HappyHorse never loads because a pickle "
                    "can run code)" if pickles else "")
            raise FileNotFoundError(
                f"no T5Gemma weights in {folder}: expected {INDEX_NAME} with its shards or {SINGLE_NAME} "
                f"(found *.safetensors: {found}){hint}; download the .safetensors files from the hub repo {HUB_REPO}")
        single = candidates[0]
    return {k: single for k in _safetensors_keys(single)}


def _select_encoder(weight_map: dict[str, Path], allow_bare: bool) -> dict[str, tuple[str, Path]]:
    """Module key -> (file key, file). Picks the first prefix that matches any key."""
    for prefix in ENCODER_PREFIXES:
        if any(k.startswith(prefix) for k in weight_map):
            return {k[len(prefix):]: (k, p) for k, p in weight_map.items() if k.startswith(prefix)}
    if allow_bare:
        return {k: (k, p) for k, p in weight_map.items()}
    raise ValueError(f"no encoder tensors found (expected keys starting with {' or '.join(ENCODER_PREFIXES)}); "
                     f"first keys seen: {_names(sorted(weight_map))}")


def _check_keys(model: nn.Module, selected: dict[str, tuple[str, Path]], source: Path, sizes_from: str) -> None:
    expected = set(model.state_dict().keys())
    missing = sorted(expected - selected.keys())
    unexpected = sorted(selected.keys() - expected)
    if not missing and not unexpected:
        return
    hint = ""
    if any(k.endswith(("._data", "._scale")) for k in unexpected):
        hint = " This looks like an optimum-quanto quantized file, which is not supported: use a bf16 file."
    raise ValueError(
        f"{source} does not match the T5Gemma encoder built from {sizes_from}: {len(missing)} missing keys "
        f"[{_names(missing)}], {len(unexpected)} unexpected keys [{_names(unexpected)}].{hint} "
        f"Use the encoder of {HUB_REPO}, with the config.json that came with the weights.")


def _check_shapes(model: nn.Module, selected: dict[str, tuple[str, Path]], sizes_from: str
                  ) -> dict[Path, list[str]]:
    """Compare every tensor shape from the file headers (nothing is read yet); group names by file."""
    params = dict(model.named_parameters())
    by_file: dict[Path, list[str]] = {}
    for name, (_, path) in selected.items():
        if not path.is_file():
            broken = broken_link_message(path)
            if broken:
                raise FileNotFoundError(f"a shard listed in the index: {broken}")
            raise FileNotFoundError(f"shard {path.name} listed in the index is missing from {path.parent}; "
                                    f"download it from {HUB_REPO}")
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        entries, _ = read_header(path)  # validates the shard (truncated, corrupt, pickle ...) before any read
        for name in names:
            info = entries.get(selected[name][0])
            if info is None:
                raise ValueError(f"{path.name} does not hold {selected[name][0]}, although the index says so; the "
                                 f"index and shards come from different downloads: download them again")
            shape = tuple(info.shape)
            if shape != tuple(params[name].shape):
                    raise ValueError(f"{path.name}: {selected[name][0]} has shape {shape}, but the encoder "
                                     f"built from {sizes_from} expects {tuple(params[name].shape)}; pass the "
                                     f"config.json that came with these weights")
    return by_file


def _assign_tensors(model: nn.Module, selected: dict[str, tuple[str, Path]], by_file: dict[Path, list[str]],
                    dtype: torch.dtype, device: torch.device | str,
                    interrupt: Optional[Callable[[], None]] = None) -> None:
    """Read tensor by tensor, file by file, replacing the meta parameters (`interrupt` before each)."""
    for path, names in by_file.items():
        with safe_open(str(path), framework="pt") as f:
            for name in names:
                if interrupt is not None:
                    interrupt()
                tensor = f.get_tensor(selected[name][0]).to(device=device, dtype=dtype)
                owner, _, leaf = name.rpartition(".")
                model.get_submodule(owner)._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)


def _read_config(folder: Path) -> tuple[T5GemmaEncoderConfig, str]:
    """(config, where its sizes came from) for the weights in `folder`."""
    path = folder / "config.json"
    if not path.is_file():  # the 9B defaults; shapes are still checked strictly
        return T5GemmaEncoderConfig(), f"the 9B default sizes (no config.json in {folder})"
    try:
        return T5GemmaEncoderConfig.from_hf_config(json.loads(path.read_text(encoding="utf-8"))), str(path)
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: {exc}") from None


def _check_weights_suffix(path: Path) -> None:
    if path.suffix != ".safetensors":
        raise ValueError(f"{path.name} is not a .safetensors file; only safetensors weights are loaded (a "
                         f"pickle .bin/.pt can run code): use the .safetensors files of {HUB_REPO}")


def load_encoder(path: str | Path, *, dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu",
                 config: T5GemmaEncoderConfig | None = None, require_tokenizer: bool = True,
                 interrupt: Optional[Callable[[], None]] = None) -> T5GemmaEncoder:
    """Build the encoder from an HF folder or an encoder-only safetensors file.

    config: overrides the folder's config.json (a single file has none; default = 9B sizes).
    require_tokenizer: for folders, fail early when the tokenizer files are absent.
    interrupt: raises to stop (ComfyUI's Cancel); called before every tensor read.
    """
    path = Path(path)
    if path.is_dir():
        if require_tokenizer:
            find_tokenizer_file(path)
        cfg, sizes_from = (config, "the config passed in") if config else _read_config(path)
        selected = _select_encoder(_folder_weight_map(path), allow_bare=False)
    elif path.is_file():
        _check_weights_suffix(path)
        cfg, sizes_from = (config, "the config passed in") if config else _read_config(path.parent)
        selected = _select_encoder({k: path for k in _safetensors_keys(path)}, allow_bare=True)
    else:
        broken = broken_link_message(path)
        if broken:
            raise FileNotFoundError(f"the T5Gemma encoder path {broken}")
        raise FileNotFoundError(f"T5Gemma encoder path {path} does not exist; point it at the folder of "
                                f"{HUB_REPO} or an encoder-only .safetensors file")
    with torch.device("meta"):
        model = T5GemmaEncoder(cfg)
    _check_keys(model, selected, path, sizes_from)
    _assign_tensors(model, selected, _check_shapes(model, selected, sizes_from), dtype, device, interrupt)
    return model.eval()


def load_text_stack(folder: str | Path, *, dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu",
                    config: T5GemmaEncoderConfig | None = None, interrupt: Optional[Callable[[], None]] = None
                    ) -> tuple[T5GemmaEncoder, T5GemmaTokenizer]:
    """Encoder + tokenizer from one HF folder, or from an encoder file and the tokenizer beside it.

    The tokenizer is loaded first, so a folder without one fails before any weight is read.
    """
    folder = Path(folder)
    if folder.is_file():
        _check_weights_suffix(folder)  # a pickle is named as such, not reported as a missing tokenizer
    tokenizer = load_tokenizer(folder.parent if folder.is_file() else folder)
    encoder = load_encoder(folder, dtype=dtype, device=device, config=config, require_tokenizer=False,
                           interrupt=interrupt)
    return encoder, tokenizer
