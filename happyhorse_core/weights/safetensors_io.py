"""Safetensors files on disk: find them, check them, read one tensor at a time, write a stream.

The one way weights are read: the DiT, T5Gemma and Turbo-VAED loaders (and the converters) all
open files here, so it knows nothing about key names. Errors are `errors.CheckpointError`.

- `open_checkpoint(path)` accepts a single `.safetensors` file, an `*.index.json`, or a folder
  (HF `model.safetensors(.index.json)`, diffusers `diffusion_pytorch_model*.safetensors`, or a
  diffusers root whose weights sit in a subfolder such as `transformer/`), validates every
  file's header without reading tensor data and returns a `CheckpointIndex`:
  key -> (file, dtype, shape). Bad files (empty, truncated, corrupt header, git-lfs pointer,
  pickle, GGUF, zstd shard, missing shard) raise errors that name the file and the fix; the
  per-file header checks live in safetensors_header.py (`read_header`).
- `CheckpointIndex.read(key)` opens the file with `safe_open` (memory-mapped) for that one
  tensor and closes it again: mapped pages touched through an open handle count in the
  process RSS until the handle closes, so reopening per tensor keeps peak host memory at one
  tensor instead of one whole shard (bench/RESULTS_memory.md has the measurement).
- `write_safetensors_stream(path, specs, produce, metadata)` writes tensors one by one from a
  producer (no whole state dict in memory) to a temporary file renamed into place at the end;
  `write_safetensors(path, tensors, metadata)` does the same for a dict, and `stage_safetensors`
  writes one of several files that must appear together. Every safetensors file the pack writes
  goes through these.
"""
from __future__ import annotations

import json
import os
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from safetensors import safe_open

from ..errors import CheckpointError
from ..paths import broken_link_message
from .checks import check_sampled_finite
from .safetensors_header import PICKLE_SUFFIXES, TORCH_TO_ST, TensorInfo, read_header

INDEX_NAMES = ("model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json")
SINGLE_NAMES = ("model.safetensors", "diffusion_pytorch_model.safetensors")
DEFAULT_SUBFOLDERS = ("transformer",)


@dataclass
class CheckpointIndex:
    """Every tensor of a checkpoint, without its data: key -> TensorInfo."""

    root: Path  # what the user pointed at
    layout: str  # e.g. "sharded (model.safetensors.index.json, 3 shards)"
    entries: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)  # merged safetensors __metadata__

    @property
    def files(self) -> list[Path]:
        return sorted({e.file for e in self.entries.values()})

    def keys(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def read(self, key: str) -> torch.Tensor:
        """One tensor, on the CPU, in its stored dtype (the file is mapped only for this call).

        A strided sample of its elements is checked for NaN/Inf (checks.check_sampled_finite)."""
        info = self.entries[key]
        with safe_open(str(info.file), framework="pt", device="cpu") as f:
            tensor = f.get_tensor(key)
        check_sampled_finite(tensor, key, info.file)
        return tensor


# -- resolving a path into files -------------------------------------------------------------

KeyFilter = Callable[[str], bool]


def open_checkpoint(path: str | os.PathLike, subfolders: Iterable[str] = DEFAULT_SUBFOLDERS, *,
                    wanted: KeyFilter | None = None, hint: str = "") -> CheckpointIndex:
    """Resolve a file, index or folder into a validated CheckpointIndex (see module docstring).

    `subfolders`: where to look inside a diffusers root (e.g. ("text_encoder",) for T5Gemma).
    `wanted`: keep only the keys it accepts; shards of an index that hold none of them are neither
        required nor opened (the T5Gemma encoder never needs the decoder's shards).
    `hint`: the next step appended to "no weights found" errors (e.g. which hub repo to download).
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(broken_link_message(root) or f"weights not found: {root}")
    if root.is_dir():
        return _open_folder(root, tuple(subfolders), wanted, hint)
    if root.name.endswith(".index.json"):
        return _open_index(root, root, wanted)
    return _open_file(root, root, "single file", wanted)


def _open_file(file: Path, root: Path, layout: str, wanted: KeyFilter | None) -> CheckpointIndex:
    entries, meta = read_header(file)
    if wanted is not None:
        entries = {k: v for k, v in entries.items() if wanted(k)}
    return CheckpointIndex(root, layout, entries, meta)


def _open_folder(folder: Path, subfolders: tuple[str, ...], wanted: KeyFilter | None, hint: str) -> CheckpointIndex:
    for name in INDEX_NAMES:
        if (folder / name).is_file():
            return _open_index(folder / name, folder, wanted)
    for name in SINGLE_NAMES:
        if (folder / name).is_file():
            return _open_file(folder / name, folder, f"folder with {name}", wanted)
    for sub in subfolders:
        if (folder / sub).is_dir():
            ckpt = _open_folder(folder / sub, (), wanted, hint)
            ckpt.root, ckpt.layout = folder, f"diffusers folder ({sub}/: {ckpt.layout})"
            return ckpt
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:
        return _open_file(found[0], folder, f"folder with one file ({found[0].name})", wanted)
    if found:
        raise CheckpointError(f"{folder} holds {len(found)} .safetensors files but no model.safetensors.index.json "
                              f"to say how they fit together ({', '.join(p.name for p in found[:5])}); "
                              "point HappyHorse at one file, or restore the index file.")
    raise FileNotFoundError(f"no .safetensors weights in {folder} (looked for {', '.join(INDEX_NAMES + SINGLE_NAMES)}"
                            f"{', ' + '/, '.join(subfolders) + '/' if subfolders else ''}).{_unloadable(folder)} "
                            f"{hint or 'Put the .safetensors weights into that folder.'}")


def _unloadable(folder: Path) -> str:
    """A sentence naming the files of `folder` that look like weights but are never loaded, or ''."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    others = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".gguf", ".zst"))
    out = ""
    if pickles:
        out += (f" It holds {', '.join(pickles[:5])}: pickle checkpoints, which HappyHorse never loads because a "
                "pickle can run code.")
    if others:
        out += f" It holds {', '.join(others[:5])}, which cannot be loaded (GGUF / zstd-compressed)."
    return out


def _read_index(index_path: Path) -> dict[str, str]:
    """The index's weight_map (key -> shard file name), each shard a plain file name in the same folder."""
    try:
        index = json.loads(index_path.read_text())
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path} is not a valid safetensors index ({e}); download it again.") from None
    bad = [s for s in weight_map.values() if not isinstance(s, str) or Path(s).name != s or s in ("", ".", "..")]
    if bad:
        raise CheckpointError(f"{index_path} names shard {bad[0]!r}, which is not a file name in the same folder; "
                              "the index is damaged or hostile: download it again.")
    return weight_map


def _open_index(index_path: Path, root: Path, wanted: KeyFilter | None) -> CheckpointIndex:
    weight_map = _read_index(index_path)
    if wanted is not None:
        weight_map = {k: s for k, s in weight_map.items() if wanted(k)}
    folder = index_path.parent
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if not (folder / shard).is_file():
            broken = broken_link_message(folder / shard)
            if broken:
                raise FileNotFoundError(f"shard {shard} named by {index_path.name}: {broken}")
            zst = folder / (shard + ".zst")
            extra = f" (found {zst.name}: decompress it with `zstd -d`)" if zst.is_file() else ""
            raise FileNotFoundError(f"shard {shard} named by {index_path.name} is missing from {folder}{extra}; "
                                    "download the missing shard.")
    entries: dict[str, TensorInfo] = {}
    meta: dict[str, str] = {}
    for shard in shards:
        shard_entries, shard_meta = read_header(folder / shard)
        entries.update(shard_entries)
        meta.update(shard_meta)
    wrong = [k for k, s in weight_map.items() if k not in entries or entries[k].file.name != s]
    if wrong:
        raise CheckpointError(f"{index_path} lists {len(wrong)} tensors that are not in the shard it names "
                              f"(first: {wrong[:3]}); the index and shards come from different downloads.")
    if wanted is not None:
        entries = {k: v for k, v in entries.items() if wanted(k)}
    n = len(shards)
    return CheckpointIndex(root, f"sharded ({index_path.name}, {n} shard{'s' * (n != 1)})", entries, meta)


# -- streaming writer ------------------------------------------------------------------------

def write_safetensors_stream(path: str | os.PathLike, specs: list[tuple[str, torch.dtype, tuple[int, ...]]],
                             produce: Callable[[str], torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write tensors named in `specs` (key, dtype, shape) one at a time; `produce(key)` returns each.

    The header is written first from the specs; data go in order of decreasing element size
    (every tensor aligned to its element size, like the official writer). The file appears
    at `path` only when complete (temporary file + fsync + rename).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write_file(tmp, specs, produce, metadata)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def stage_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> Path:
    """Write `tensors` to a hidden, uniquely named file beside `path` and return its name.

    For several files that must appear together (the CLI's mp4 and its companions): the caller
    renames each staged file into place once all are written, or deletes them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        _write_file(tmp, _specs(tensors), lambda key: tensors[key], metadata)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _specs(tensors: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    return [(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]


def _write_file(tmp: Path, specs: list[tuple[str, torch.dtype, tuple[int, ...]]],
                produce: Callable[[str], torch.Tensor], metadata: dict[str, str] | None) -> None:
    """Header from `specs`, then each produced tensor's bytes, flushed to disk (plain open(): the user's umask)."""
    elem = {k: torch.empty((), dtype=dt).element_size() for k, dt, _ in specs}
    order = sorted(specs, key=lambda s: -elem[s[0]])
    header: dict[str, object] = {"__metadata__": dict(metadata or {})} if metadata else {}
    offset = 0
    for key, dtype, shape in order:
        n = elem[key]
        for s in shape:
            n *= s
        header[key] = {"dtype": TORCH_TO_ST[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for key, dtype, shape in order:
            t = produce(key)
            if t.dtype != dtype or tuple(t.shape) != tuple(shape):
                raise ValueError(f"tensor {key}: produced {t.dtype} {list(t.shape)}, expected {dtype} {list(shape)}")
            fh.write(memoryview(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
        fh.flush()
        os.fsync(fh.fileno())


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> Path:
    """Write a whole dict of tensors atomically (through write_safetensors_stream)."""
    return write_safetensors_stream(path, _specs(tensors), lambda key: tensors[key], metadata)
