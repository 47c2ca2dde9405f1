"""One safetensors file's header: parsed and checked without reading any tensor data.

Every weights file the pack opens goes through `read_header` (safetensors_io.open_checkpoint calls it
for each file and shard), so a bad file is refused here with an error that names it and the fix:
empty, truncated, git-lfs pointer, pickle/zip or GGUF content behind a .safetensors name, a pickle /
GGUF / zstd file by its suffix (`refuse_unsafe_suffix`), or a corrupted header. Header entries must
have a known dtype (`ST_DTYPES`), non-negative integer shapes and offsets, and byte ranges that tile
the data section exactly (no overlap, gap or overrun), as the format requires.

`TensorInfo` is what a header entry says about one tensor: its file, dtype tag and shape.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError
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
    if head[8:9] == b"{":  # a safetensors JSON header: its length may well start with bytes 0x80 0x02..0x05
        return
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
