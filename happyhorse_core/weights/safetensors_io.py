"""Safetensors files on disk: find them, check them, read one tensor at a time, write a stream.

Shared by the DiT loader and the text-encoder loader, so it knows nothing about key names.

- `open_checkpoint(path)` accepts a single `.safetensors` file, an `*.index.json`, or a folder
  (HF `model.safetensors(.index.json)`, diffusers `diffusion_pytorch_model*.safetensors`, or a
  diffusers root whose weights sit in a subfolder such as `transformer/`), validates every
  file's header without reading tensor data and returns a `CheckpointIndex`:
  key -> (file, dtype, shape). Bad files (empty, truncated, corrupt header, git-lfs pointer,
  pickle, GGUF, zstd shard, missing shard) raise errors that name the file and the fix.
- `CheckpointIndex.read(key)` opens the file with `safe_open` (memory-mapped) for that one
  tensor and closes it again: mapped pages touched through an open handle count in the
  process RSS until the handle closes, so reopening per tensor keeps peak host memory at one
  tensor instead of one whole shard (measured: 4 GB fp32 file -> +64 MB peak, not +4 GB).
- `write_safetensors_stream(path, specs, produce, metadata)` writes tensors one by one from a
  producer (no whole state dict in memory) to a temporary file renamed into place at the end.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from safetensors import safe_open

from ..paths import broken_link_message

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


class CheckpointError(ValueError):
    """A weights file that exists but cannot be used; the message says which file and what to do."""


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
        """One tensor, on the CPU, in its stored dtype (the file is mapped only for this call)."""
        info = self.entries[key]
        with safe_open(str(info.file), framework="pt", device="cpu") as f:
            return f.get_tensor(key)


# -- file checks ---------------------------------------------------------------------------

def _fail_if_not_safetensors(path: Path) -> None:
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
    _fail_if_not_safetensors(path)
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


def _entries(path: Path, header: dict, data_size: int) -> dict[str, TensorInfo]:
    out: dict[str, TensorInfo] = {}
    end_max = 0
    for key, spec in header.items():
        try:
            dtype, shape, (start, end) = spec["dtype"], tuple(int(s) for s in spec["shape"]), spec["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path} has a corrupted safetensors header (bad entry for {key!r}); "
                                  "download the file again.") from None
        if dtype not in ST_DTYPES:
            raise CheckpointError(f"{path}: tensor {key!r} has dtype {dtype}, which HappyHorse cannot read "
                                  f"(known: {sorted(ST_DTYPES)}).")
        info = TensorInfo(path, dtype, shape)
        if not 0 <= start <= end or end - start != info.nbytes:
            raise CheckpointError(f"{path} has a corrupted safetensors header (offsets of {key!r} do not match its "
                                  f"shape {list(shape)} {dtype}); download the file again.")
        end_max = max(end_max, end)
        out[key] = info
    if end_max > data_size:
        raise CheckpointError(f"{path} is truncated: the header declares {end_max} bytes of tensor data but only "
                              f"{data_size} are present; the download was interrupted, download it again.")
    return out


# -- resolving a path into files -------------------------------------------------------------

def open_checkpoint(path: str | os.PathLike, subfolders: Iterable[str] = DEFAULT_SUBFOLDERS) -> CheckpointIndex:
    """Resolve a file, index or folder into a validated CheckpointIndex (see module docstring).

    `subfolders`: where to look inside a diffusers root (e.g. ("text_encoder",) for T5Gemma).
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(broken_link_message(root) or f"weights not found: {root}")
    if root.is_dir():
        return _open_folder(root, tuple(subfolders))
    if root.name.endswith(".index.json"):
        return _open_index(root, root)
    entries, meta = read_header(root)
    return CheckpointIndex(root, "single file", entries, meta)


def _open_folder(folder: Path, subfolders: tuple[str, ...]) -> CheckpointIndex:
    for name in INDEX_NAMES:
        if (folder / name).is_file():
            return _open_index(folder / name, folder)
    for name in SINGLE_NAMES:
        if (folder / name).is_file():
            entries, meta = read_header(folder / name)
            return CheckpointIndex(folder, f"folder with {name}", entries, meta)
    for sub in subfolders:
        if (folder / sub).is_dir():
            ckpt = _open_folder(folder / sub, ())
            ckpt.root, ckpt.layout = folder, f"diffusers folder ({sub}/: {ckpt.layout})"
            return ckpt
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:
        entries, meta = read_header(found[0])
        return CheckpointIndex(folder, f"folder with one file ({found[0].name})", entries, meta)
    if found:
        raise CheckpointError(f"{folder} holds {len(found)} .safetensors files but no model.safetensors.index.json "
                              f"to say how they fit together ({', '.join(p.name for p in found[:5])}); "
                              "point HappyHorse at one file, or restore the index file.")
    others = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES + (".gguf", ".zst"))
    hint = f" It holds {', '.join(others[:5])}, which cannot be loaded (see the docs)." if others else ""
    raise FileNotFoundError(f"no .safetensors weights in {folder} (looked for {', '.join(INDEX_NAMES + SINGLE_NAMES)}"
                            f"{', ' + '/, '.join(subfolders) + '/' if subfolders else ''}).{hint}")


def _open_index(index_path: Path, root: Path) -> CheckpointIndex:
    try:
        index = json.loads(index_path.read_text())
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path} is not a valid safetensors index ({e}); download it again.") from None
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
    n = len(shards)
    return CheckpointIndex(root, f"sharded ({index_path.name}, {n} shard{'s' * (n != 1)})", entries, meta)


def iter_safetensors(path: str | os.PathLike, key_filter: Callable[[str], bool] | None = None,
                     subfolders: Iterable[str] = DEFAULT_SUBFOLDERS) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (key, CPU tensor in its stored dtype) one at a time, for keys passing `key_filter`."""
    ckpt = open_checkpoint(path, subfolders)
    for key in ckpt.keys():
        if key_filter is None or key_filter(key):
            yield key, ckpt.read(key)


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
