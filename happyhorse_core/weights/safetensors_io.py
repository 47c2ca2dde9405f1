"""Safetensors files on disk: find them, check them, read one tensor at a time, write a stream.

The one way weights are read: the DiT, T5Gemma and Turbo-VAED loaders (and the converters) all
open files here, so it knows nothing about key names. Errors are `errors.CheckpointError`.

- `open_checkpoint(path)` accepts a single `.safetensors` file, an `*.index.json`, or a folder
  (HF `model.safetensors(.index.json)`, diffusers `diffusion_pytorch_model*.safetensors`, or a
  diffusers root whose weights sit in a subfolder such as `transformer/`), validates every
  file's header without reading tensor data and returns a `CheckpointIndex`:
  key -> (file, dtype, shape). Bad files (empty, truncated, corrupt header, git-lfs pointer,
  pickle, GGUF, zstd shard, missing shard) raise errors that name the file and the fix. Header
  entries must have a known dtype, non-negative integer shapes and offsets, and byte ranges that
  tile the data section exactly (no overlap, gap or overrun), as the format requires.
- `CheckpointIndex.read(key)` opens the file with `safe_open` (memory-mapped) for that one
  tensor and closes it again: mapped pages touched through an open handle count in the
  process RSS until the handle closes, so reopening per tensor keeps peak host memory at one
  tensor instead of one whole shard (bench/RESULTS_memory.md has the measurement).
- `write_safetensors_stream(path, specs, produce, metadata)` writes tensors one by one from a
  producer (no whole state dict in memory) to a temporary file renamed into place at the end;
  `write_safetensors(path, tensors, metadata)` does the same for a dict. Every safetensors file the
  pack writes goes through these two.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from safetensors import safe_open

from ..errors import CheckpointError
from ..paths import broken_link_message
from .checks import check_sampled_finite

ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
TORCH_TO_ST = {v: k for k, v in ST_DTYPES.items()}
_ELEM_SIZE = {k: torch.empty((), dtype=v).element_size() for k, v in ST_DTYPES.items()}
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
INDEX_NAMES = ("model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json")
SINGLE_NAMES = ("model.safetensors", "diffusion_pytorch_model.safetensors")
DEFAULT_SUBFOLDERS = ("transformer",)
MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str  # safetensors dtype tag, e.g. "BF16", "F8_E4M3"
    shape: tuple[int, ...]

    @property
    def torch_dtype(self) -> torch.dtype:
        return ST_DTYPES[self.dtype]

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * _ELEM_SIZE[self.dtype]


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


# -- file checks ---------------------------------------------------------------------------

def refuse_unsafe_suffix(path: Path) -> None:
    """Refuse a pickle (.ckpt/.pt/.pth/.bin/.pkl), GGUF or zstd file by its name, before opening it."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} is a pickle checkpoint ({suffix}); HappyHorse never unpickles weights because a pickle can "
            "run code. Download the .safetensors release instead, or convert this file once with a trusted tool "
            "(torch.load(..., weights_only=True) then safetensors.torch.save_file) and load the result.")
    if suffix == ".gguf":
        raise CheckpointError(f"{path} is a GGUF file; GGUF is not supported for this model. "
                              "Use a .safetensors checkpoint (bf16, fp32 or fp8).")
    if suffix == ".zst":
        raise CheckpointError(f"{path} is zstd-compressed; decompress it first (`zstd -d {path.name}`) "
                              "and point HappyHorse at the resulting .safetensors file/folder.")


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and check one safetensors header (no tensor data is read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(broken_link_message(path) or f"weights file not found: {path}")
    refuse_unsafe_suffix(path)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the download or copy was interrupted; download it again.")
    with open(path, "rb") as fh:
        head = fh.read(min(size, 64))
        _fail_on_magic(path, head, size)
        if size < 8:
            raise CheckpointError(f"{path} is only {size} bytes, too short for a safetensors file; download it again.")
        (n,) = struct.unpack("<Q", head[:8])
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path} has a corrupted safetensors header (declared header length {n} bytes, "
                                  f"file size {size}); the file is damaged or not safetensors: download it again.")
        fh.seek(8)
        raw = fh.read(n)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise TypeError("header is not a JSON object")
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path} has a corrupted safetensors header ({e}); download the file again.") from None
    metadata = header.pop("__metadata__", None) or {}
    return _entries(path, header, data_size=size - 8 - n), {str(k): str(v) for k, v in metadata.items()}


def _fail_on_magic(path: Path, head: bytes, size: int) -> None:
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(f"{path} is a git-lfs pointer file ({size} bytes), not the weights: the file was not "
                              "downloaded. Run `git lfs pull` in that repository or download the file directly.")
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head.startswith(b"PK\x03\x04"):
        raise CheckpointError(f"{path} is a PyTorch pickle/zip checkpoint with a .safetensors name; HappyHorse "
                              "never unpickles weights. Download the real .safetensors file.")
    if head.startswith(b"GGUF"):
        raise CheckpointError(f"{path} is a GGUF file with a .safetensors name; GGUF is not supported here.")


def _bad_header(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} has a corrupted safetensors header ({why}); the file is damaged or was written "
                           "by a broken tool: download the file again.")


def _is_count(v: object) -> bool:
    """A JSON integer >= 0 (JSON floats such as 2.0 and booleans are refused, as the format requires)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _entry(path: Path, key: str, spec: object) -> tuple[TensorInfo, int, int]:
    """One header entry checked: known dtype, non-negative integer shape and offsets that match it."""
    if not isinstance(spec, dict) or not {"dtype", "shape", "data_offsets"} <= spec.keys():
        raise _bad_header(path, f"bad entry for {key!r}")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype, str) or dtype not in ST_DTYPES:
        raise CheckpointError(f"{path}: tensor {key!r} has dtype {dtype}, which HappyHorse cannot read "
                              f"(known: {sorted(ST_DTYPES)}).")
    if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
        raise _bad_header(path, f"shape of {key!r} is {shape!r}, not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise _bad_header(path, f"data offsets of {key!r} are {offsets!r}, not two non-negative integers")
    info = TensorInfo(path, dtype, tuple(shape))
    start, end = offsets
    if start > end or end - start != info.nbytes:
        raise _bad_header(path, f"offsets of {key!r} do not match its shape {list(shape)} {dtype}")
    return info, start, end


def _entries(path: Path, header: dict, data_size: int) -> dict[str, TensorInfo]:
    """Every entry checked, then the byte ranges: in order, without overlap or gap, inside the file."""
    out: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for key, spec in header.items():
        info, start, end = _entry(path, str(key), spec)
        out[str(key)] = info
        spans.append((start, end, str(key)))
    spans.sort()
    pos, prev = 0, None
    for start, end, key in spans:
        if start < pos:
            raise _bad_header(path, f"the data of {key!r} overlaps the data of {prev!r}")
        if start > pos:
            raise _bad_header(path, f"{start - pos} bytes of unclaimed data before {key!r}")
        pos, prev = end, key
    if pos > data_size:
        raise CheckpointError(f"{path} is truncated: the header declares {pos} bytes of tensor data but only "
                              f"{data_size} are present; the download was interrupted, download it again.")
    if pos < data_size:
        raise _bad_header(path, f"{data_size - pos} bytes after the last tensor that no tensor claims")
    return out


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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
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
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> Path:
    """Write a whole dict of tensors atomically (through write_safetensors_stream)."""
    specs = [(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
    return write_safetensors_stream(path, specs, lambda key: tensors[key], metadata)
